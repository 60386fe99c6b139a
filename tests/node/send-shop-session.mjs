// Drive the real @segment/analytics-node client against a Pulse collector (only its host changed).
//
//   node tests/node/send-shop-session.mjs --host http://127.0.0.1:8000 --write-key KEY --prefix node
//
// Sends the shop session of tests/integration/test_segment_sdks.py::shop_session (keep the two in
// step: the test expects the same profiles from every client), then --bulk extra tracks, and prints
// one JSON line: {"sent": n, "delivered": n, "failed": [...], "version": "..."}. Exits 1 when any
// message was not delivered. PULSE_HOST and PULSE_WRITE_KEY work in place of the flags.
import { parseArgs } from 'node:util'
import { Analytics } from '@segment/analytics-node'

const { values: opts } = parseArgs({
  options: {
    host: { type: 'string', default: process.env.PULSE_HOST },
    'write-key': { type: 'string', default: process.env.PULSE_WRITE_KEY },
    prefix: { type: 'string', default: 'node' },
    bulk: { type: 'string', default: '0' },
    'max-retries': { type: 'string', default: '3' }, // the client's own default
    'flush-timeout-ms': { type: 'string', default: '30000' },
  },
})
if (!opts.host || !opts['write-key']) {
  console.error('usage: send-shop-session.mjs --host URL --write-key KEY [--prefix P] [--bulk N] [--max-retries N]')
  process.exit(2)
}

const analytics = new Analytics({
  writeKey: opts['write-key'],
  host: opts.host,
  path: '/v1/batch', // the default; the URL is new URL(path, host), so a path on host would be replaced
  maxRetries: Number(opts['max-retries']),
  flushAt: 5, // several requests per session, so the re-sent message travels in a later one
  flushInterval: 200,
})

const sent = []
const failed = []
let delivered = 0

function record(call, message) {
  sent.push(call)
  analytics[call](message, (err, ctx) => {
    if (err) failed.push({ call, messageId: ctx?.event?.messageId, error: String(err) })
    else delivered += 1
  })
}

const anon = `${opts.prefix}-anon`
const user = `${opts.prefix}-user`
for (let i = 0; i < 3; i++) {
  record('page', { anonymousId: anon, category: 'shoes', name: 'Shoes', properties: { product_id: 'p1' } })
}
record('track', { anonymousId: anon, event: 'Product Clicked', properties: { product_id: 'p1' } })
record('track', { anonymousId: anon, event: 'Products Searched', properties: { query: 'running shoes' } })
record('track', { anonymousId: anon, event: 'Product Added', properties: { product_id: 'p1', quantity: 2, price: 10.0 } })
record('track', { anonymousId: anon, event: 'Product Removed', properties: { product_id: 'p1', quantity: 1 } })
record('identify', { userId: user, anonymousId: anon, traits: { plan: 'pro' } })
record('identify', { userId: `${opts.prefix}-server`, traits: { plan: 'team' } }) // server-side: no anonymousId
record('track', {
  userId: user,
  anonymousId: anon,
  event: 'Order Completed',
  properties: { order_id: 'o1', revenue: 25.0, product_id: 'p1', quantity: 1 },
})
record('alias', { previousId: `${opts.prefix}-old`, userId: user })
// A second account of the same person, then an alias between the two known user ids: one person.
record('track', { userId: `${opts.prefix}-other`, event: 'Product Viewed', properties: { product_id: 'p3' } })
record('alias', { previousId: `${opts.prefix}-other`, userId: user })
const fixed = { userId: user, event: 'Product Viewed', properties: { product_id: 'p2' }, messageId: `${opts.prefix}-fixed-1` }
record('track', fixed)
for (let i = 0; i < Number(opts.bulk); i++) {
  record('track', { userId: `${opts.prefix}-bulk`, event: 'Product Viewed', properties: { product_id: `b${i}` } })
}
await analytics.flush({ timeout: Number(opts['flush-timeout-ms']) })
record('track', fixed) // a re-sent message (same messageId) counts once
await analytics.closeAndFlush({ timeout: Number(opts['flush-timeout-ms']) })

const unsettled = sent.length - delivered - failed.length // callbacks still pending when the timeout hit
if (unsettled) failed.push({ error: `${unsettled} messages unsettled after ${opts['flush-timeout-ms']} ms` })
console.log(JSON.stringify({ sent: sent.length, delivered, failed, version: analytics.VERSION }))
process.exit(failed.length ? 1 : 0)
