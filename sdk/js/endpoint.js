// portcullis-sdk/endpoint: aggregate-API endpoints (the `endpoint` world). Mirrors the Rust
// SDK's `Call`, `fetch`, `fetchAll`, `Reply`, `CallError` and `json::response`.

import { fetch as witFetch, fetchAll as witFetchAll } from 'portcullis:plugin/upstream@0.2.0';
import { bytes } from './index.js';

const decoder = new TextDecoder();

/** Why a call gave no usable reply. `message` reads like the Rust SDK's (`timeout`,
 * `connect failed`, `status 503`, ...), so both languages report sections the same way. */
export class CallError extends Error {
  constructor(kind, detail) {
    super(describe(kind, detail));
    this.name = 'CallError';
    /** `timeout` | `connect-failed` | `overloaded` | `unknown-cluster` | `limit-exceeded` |
     * `upstream-reset` | `invalid-call` (the call itself is malformed: a method that is not
     * a token, a path not starting with `/`, an invalid header, `timeout-ms` 0; new in WIT
     * 0.2.0) | `status` (non-2xx, from `ok2xx`) | `bad-body` (from `Reply.json`) */
    this.kind = kind;
    this.detail = detail;
  }
}

function describe(kind, detail) {
  switch (kind) {
    case 'connect-failed':
      return 'connect failed';
    case 'unknown-cluster':
      return 'unknown cluster';
    case 'limit-exceeded':
      return `limit exceeded: ${detail}`;
    case 'invalid-call':
      return `invalid call: ${detail}`;
    case 'upstream-reset':
      return 'upstream reset';
    case 'status':
      return `status ${detail}`;
    case 'bad-body':
      return `bad body: ${detail}`;
    default:
      return kind;
  }
}

function fromWit(e) {
  // A WIT `call-error` value: `{ tag, val? }`.
  return new CallError(e.tag, e.val);
}

/** A reply from an upstream: any status (4xx/5xx are replies, not errors). */
export class Reply {
  constructor(r) {
    this.status = r.status;
    this.headers = r.headers;
    this.body = r.body;
  }
  /** Whether the status is 2xx. */
  isSuccess() {
    return this.status >= 200 && this.status < 300;
  }
  /** First value of response header `name` (case-insensitive). */
  header(name) {
    const n = name.toLowerCase();
    const hit = this.headers.find(([k]) => k.toLowerCase() === n);
    return hit ? hit[1] : undefined;
  }
  /** The body as UTF-8 text. */
  text() {
    return decoder.decode(this.body);
  }
  /** The body parsed as JSON; throws `CallError('bad-body')` if it is not. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw new CallError('bad-body', e.message);
    }
  }
}

/** One upstream call. The timeout is mandatory and is 1 s unless set (0 is `invalid-call`).
 * No headers and an empty body by default. */
export class Call {
  constructor(method, cluster, path) {
    this.cluster = cluster;
    this.method = method;
    this.path = path;
    this.headers = [];
    this.body = new Uint8Array(0);
    this.timeoutMs = 1000;
  }
  /** A `GET` call to `cluster` at `path` (path and query, starting with `/`). */
  static get(cluster, path) {
    return new Call('GET', cluster, path);
  }
  /** Sets the call's timeout in ms (default 1000; also capped by the request's deadline). */
  timeout(ms) {
    this.timeoutMs = ms;
    return this;
  }
  /** Adds a request header. */
  header(name, value) {
    this.headers.push([name.toLowerCase(), String(value)]);
    return this;
  }
  /** Sets the body (string or bytes). */
  withBody(body) {
    this.body = bytes(body);
    return this;
  }
  /** Copies the named headers (if present) from the incoming request. */
  forward(req, names) {
    for (const n of names) {
      for (const [k, v] of req.headers) {
        if (k.toLowerCase() === n) this.headers.push([k, v]);
      }
    }
    return this;
  }
  /** `forward` with the usual context: authorization, cookie, traceparent, tracestate,
   * x-request-id. */
  forwardContext(req) {
    return this.forward(req, ['authorization', 'cookie', 'traceparent', 'tracestate', 'x-request-id']);
  }
  toWit() {
    return {
      cluster: this.cluster,
      method: this.method,
      path: this.path,
      headers: this.headers,
      body: this.body,
      timeoutMs: this.timeoutMs,
    };
  }
}

/** Makes one call; returns a `Reply` or throws a `CallError`. The guest is suspended until
 * the reply (the gateway's worker thread is not). */
export function fetch(call) {
  try {
    return new Reply(witFetch(call.toWit()));
  } catch (e) {
    // componentize-js raises a WIT `err` as an error carrying the value as `payload`.
    if (e && e.payload && typeof e.payload.tag === 'string') throw fromWit(e.payload);
    throw e;
  }
}

/** Makes all calls concurrently on the host (at most the manifest's `max_fanout`); results
 * come back in order, each `{ ok: true, reply }` or `{ ok: false, error }`. */
export function fetchAll(calls) {
  return witFetchAll(calls.map((c) => c.toWit())).map((r) =>
    r.tag === 'ok' ? { ok: true, reply: new Reply(r.val) } : { ok: false, error: fromWit(r.val) },
  );
}

/** The reply of a `fetchAll` result if it is a 2xx; throws the `CallError` otherwise
 * (`status N` for a non-2xx reply). */
export function ok2xx(result) {
  if (!result.ok) throw result.error;
  if (!result.reply.isSuccess()) throw new CallError('status', result.reply.status);
  return result.reply;
}

/** A JSON response with `content-type: application/json`. */
export function jsonResponse(status, value) {
  return {
    status,
    headers: [['content-type', 'application/json']],
    body: bytes(JSON.stringify(value)),
  };
}
