// Demo shop: renders the catalogue, sends events with the Pulse tracker, shows banner decisions.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("pulse-config").textContent);
  pulse.init({ writeKey: config.writeKey, flushInterval: 500 });

  var view = document.getElementById("view");
  var products = {};
  var categories = {};
  var cart = JSON.parse(localStorage.getItem("demo:cart") || "{}");

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(child);
    });
    return node;
  }

  function price(p) {
    return p.price == null ? "" : p.price.toFixed(2) + " " + p.currency;
  }

  function renderHome(scrollTo) {
    view.replaceChildren();
    Object.keys(categories).forEach(function (category) {
      var cards = categories[category].map(function (p) {
        var card = el("a", { class: "product", href: "#/product/" + p.product_id, "data-product-id": p.product_id }, [
          el("div", { class: "name", text: p.name }),
          el("div", { class: "muted", text: p.brand + " \u00b7 " + price(p) }),
        ]);
        card.addEventListener("click", function () {
          pulse.track("click", { product_id: p.product_id, category: p.category });
        });
        return card;
      });
      view.appendChild(el("section", { id: "cat-" + category, "data-category": category }, [
        el("h2", { text: category }),
        el("div", { class: "grid" }, cards),
      ]));
    });
    pulse.page({});
    if (scrollTo) {
      var section = document.getElementById("cat-" + scrollTo);
      if (section) section.scrollIntoView();
    }
  }

  function renderProduct(id) {
    var p = products[id];
    if (!p) return renderHome();
    var button = el("button", { id: "add-to-cart", type: "button", text: "Add to cart" });
    button.addEventListener("click", function () {
      pulse.track("add_to_cart", {
        product_id: p.product_id, category: p.category, quantity: 1, price: p.price, currency: p.currency,
      });
      cart[p.product_id] = (cart[p.product_id] || 0) + 1;
      localStorage.setItem("demo:cart", JSON.stringify(cart));
      showCart();
    });
    view.replaceChildren(el("div", { class: "detail", "data-product-id": p.product_id }, [
      el("div", { class: "muted", text: p.category + " \u00b7 " + p.brand }),
      el("h1", { id: "product-name", text: p.name }),
      el("div", { class: "price", text: price(p) }),
      button,
      el("p", {}, [el("a", { href: "#/", text: "\u2190 back to the catalogue" })]),
    ]));
    pulse.page({ category: p.category, product_id: p.product_id });
  }

  function route() {
    var parts = window.location.hash.replace(/^#\/?/, "").split("/");
    if (parts[0] === "product" && parts[1]) renderProduct(decodeURIComponent(parts[1]));
    else renderHome(parts[0] === "cat" ? decodeURIComponent(parts[1] || "") : null);
    window.scrollTo(0, 0);
  }

  function showCart() {
    var n = Object.keys(cart).reduce(function (sum, k) { return sum + cart[k]; }, 0);
    document.getElementById("cart").textContent = "Cart: " + n;
  }

  function showIdentity() {
    var anon = pulse.anonymousId();
    var user = pulse.userId();
    document.getElementById("anonymous-id").textContent = anon;
    document.getElementById("profile-hint").textContent =
      "curl -H 'X-Pulse-Key: <read key>' " + window.location.origin + "/v1/profiles/" + (user || anon);
    var signedIn = document.getElementById("signed-in");
    signedIn.hidden = !user;
    signedIn.textContent = user ? "Signed in as " + user : "";
    document.getElementById("sign-in").hidden = !!user;
  }

  document.getElementById("sign-in").addEventListener("submit", function (event) {
    event.preventDefault();
    var id = document.getElementById("user-id").value.trim();
    if (id) pulse.identify(id, { source: "demo_shop" });
    showIdentity();
  });

  // Browsers cannot hold a read key: the demo asks its own endpoint, which reads decisions server-side.
  function pollDecisions() {
    if (document.hidden) return;
    fetch("/demo/decisions/" + encodeURIComponent(pulse.anonymousId()), { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : { decisions: [] }; })
      .then(function (body) { showBanner(body.decisions[0]); })
      .catch(function () {});
  }

  function showBanner(decision) {
    var banner = document.getElementById("banner");
    banner.hidden = !decision;
    if (!decision) return;
    document.getElementById("banner-message").textContent = decision.message || "";
    var link = document.getElementById("banner-category");
    var category = decision.params && decision.params.category;
    link.hidden = !category;
    link.textContent = category ? "Shop " + category : "";
    link.setAttribute("href", category ? "#/cat/" + encodeURIComponent(category) : "#/");
    banner.setAttribute("data-rule", decision.rule || "");
    banner.setAttribute("data-category", category || "");
  }

  fetch("/demo/catalog")
    .then(function (r) { return r.json(); })
    .then(function (body) {
      categories = body.categories;
      Object.keys(categories).forEach(function (c) {
        categories[c].forEach(function (p) { products[p.product_id] = p; });
      });
      window.addEventListener("hashchange", route);
      route();
      document.body.setAttribute("data-ready", "true");
    });
  showCart();
  showIdentity();
  pollDecisions();
  setInterval(pollDecisions, 1000);
})();
