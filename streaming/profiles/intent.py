"""Purchase-intent model (pure): session features, logistic scoring, training with scikit-learn.

A session is described by how many events of each type it has so far and how long it has
lasted; the model is a logistic regression on ``log1p`` of those numbers, trained on archived
sessions (label: the session contains a purchase). Being linear, it is scored inside
``update.lua`` on every profile update at almost no cost: the profile app only passes the
coefficients along with each batch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

#: Event types counted per session as features (purchases are the label, never a feature).
FEATURE_TYPES = ("page_view", "click", "add_to_cart", "remove_from_cart", "search")
#: All features, in model order: the per-type counts, then session size and duration.
FEATURES = (*FEATURE_TYPES, "events", "minutes")


def session_features(counts: Mapping[str, int], minutes: float) -> list[float]:
    """Feature vector of a session: ``log1p`` of per-type counts, non-purchase events and minutes."""
    events = sum(n for event_type, n in counts.items() if event_type != "purchase")
    raw = [*(counts.get(t, 0) for t in FEATURE_TYPES), events, max(minutes, 0.0)]
    return [math.log1p(value) for value in raw]


@dataclass(frozen=True)
class IntentModel:
    """A published logistic model: ``sigmoid(bias + weights . features)``."""

    bias: float
    weights: tuple[float, ...]
    metrics: Mapping[str, float]
    trained_at: str = ""

    @property
    def version(self) -> str:
        return hashlib.sha256(json.dumps([self.bias, self.weights]).encode()).hexdigest()[:12]

    def score(self, counts: Mapping[str, int], minutes: float) -> float:
        z = self.bias + sum(
            w * x for w, x in zip(self.weights, session_features(counts, minutes), strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z))

    def script_argument(self) -> bytes:
        """What ``update.lua`` receives: bias, then a weight per feature type, events, minutes."""
        return msgspec.msgpack.encode([self.bias, list(FEATURE_TYPES), list(self.weights)])

    def to_json(self) -> str:
        return json.dumps(
            {
                "features": list(FEATURES),
                "bias": self.bias,
                "weights": list(self.weights),
                "metrics": dict(self.metrics),
                "trained_at": self.trained_at,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> IntentModel:
        data = json.loads(text)
        if data.get("features") != list(FEATURES):
            raise ValueError(
                f"model features {data.get('features')} do not match this version's {list(FEATURES)}"
            )
        return cls(
            float(data["bias"]),
            tuple(float(w) for w in data["weights"]),
            data.get("metrics", {}),
            data.get("trained_at", ""),
        )


class NotEnoughData(ValueError):
    """Too few sessions, or only one class, to train on."""


def train_intent_model(
    sessions: Sequence[tuple[Mapping[str, int], float, bool]],
    *,
    trained_at: str = "",
    seed: int = 7,
    min_sessions: int = 50,
) -> IntentModel:
    """Fit on (counts by type, minutes, purchased) sessions; metrics come from a held-out 25%."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split

    labels = [bool(purchased) for _, _, purchased in sessions]
    positives = sum(labels)
    if len(sessions) < min_sessions or positives < 5 or len(sessions) - positives < 5:
        raise NotEnoughData(
            f"{len(sessions)} sessions with {positives} purchasing; need {min_sessions}+ and 5+ of each class"
        )
    features = [session_features(counts, minutes) for counts, minutes, _ in sessions]
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    probabilities = model.predict_proba(x_test)[:, 1]
    metrics: dict[str, Any] = {
        "sessions": len(sessions),
        "positive_rate": round(positives / len(sessions), 4),
        "test_sessions": len(y_test),
        "roc_auc": round(float(roc_auc_score(y_test, probabilities)), 4),
        "accuracy": round(float(accuracy_score(y_test, probabilities >= 0.5)), 4),
        "log_loss": round(float(log_loss(y_test, probabilities, labels=[False, True])), 4),
    }
    return IntentModel(
        float(model.intercept_[0]), tuple(float(w) for w in model.coef_[0]), metrics, trained_at
    )
