// portcullis-sdk: write Portcullis gateway plugins in JavaScript (or TypeScript).
//
// Mirrors the Rust SDK (`sdk/src/`): `respond`, `reject`, the `Changes` builder, `config`,
// `log`, `metrics` and the request helpers. Endpoint helpers (`fetch`, `fetchAll`, `Call`,
// `jsonResponse`) live in `portcullis-sdk/endpoint`, because only the `endpoint` world
// imports `upstream`: a filter that imported them would not build.
//
// The contract (when each export runs, what its return means) is the WIT in `types/` (and
// the gateway's `wit/`); the guide is docs/plugins.md, section "JavaScript and TypeScript".

import { log as witLog } from 'portcullis:plugin/log@0.2.0';
import { counterAdd, histogramObserve } from 'portcullis:plugin/metrics@0.2.0';
import { all as configAll } from 'portcullis:plugin/config@0.2.0';

const encoder = new TextEncoder();

/** Go on unchanged (inbound or outbound). */
export const CONTINUE = Object.freeze({ tag: 'continue' });

/** Bytes of `body`: a string is UTF-8 encoded, bytes pass as they are. */
export function bytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (body instanceof Uint8Array) return body;
  return encoder.encode(String(body));
}

/**
 * A direct answer from an inbound filter, `text/plain` unless `headers` says otherwise.
 * `headers` is a list of `[name, value]` pairs.
 */
export function respond(status, body, headers) {
  const hs = headers ?? [['content-type', 'text/plain; charset=utf-8']];
  return {
    tag: 'respond',
    val: { status, headers: hs.map(([k, v]) => [k.toLowerCase(), String(v)]), body: bytes(body) },
  };
}

/**
 * Rejects the request: the gateway answers `status` (400-599) with `reason` as a
 * `text/plain` body and `portcullis-error: plugin-rejected`, and the passport and access log
 * record the request as rejected by this plugin. `headers` (new in WIT 0.2.0, default none),
 * a list of `[name, value]` pairs, are added to the answer, e.g.
 *
 *   reject(401, 'missing API key', [['www-authenticate', 'Bearer']])
 *
 * `portcullis-error`, `content-type` and framing headers are the gateway's: naming one counts
 * as the plugin's `bad-output`, and the request is still rejected, without the headers. Like
 * the Rust SDK's `reject_with` (and `reject` when `headers` is left out).
 */
export function reject(status, reason, headers) {
  const hs = (headers ?? []).map(([k, v]) => [String(k).toLowerCase(), String(v)]);
  return { tag: 'reject', val: { status, reason: String(reason), headers: hs } };
}

/**
 * Builder for request or response changes, like the Rust SDK's `Changes`:
 *
 *   new Changes().setHeader('x-canary', '1').cluster('api-canary').inbound()
 *
 * `inbound()` / `outbound()` give `CONTINUE` when nothing was asked for.
 */
export class Changes {
  constructor() {
    this.set = [];
    this.remove = [];
    this.newPath = undefined;
    this.newCluster = undefined;
    this.newPriority = undefined;
    this.metadata = [];
    this.newStatus = undefined;
  }
  /** Sets a header, replacing any value it had. */
  setHeader(name, value) {
    this.set.push([name.toLowerCase(), String(value)]);
    return this;
  }
  /** Removes a header (applied before `setHeader`). */
  removeHeader(name) {
    this.remove.push(name.toLowerCase());
    return this;
  }
  /** Inbound: rewrites the path and query (normalized by the gateway before routing). */
  path(pathAndQuery) {
    this.newPath = pathAndQuery;
    return this;
  }
  /** Inbound: sends the request to this cluster instead of the route's. */
  cluster(name) {
    this.newCluster = name;
    return this;
  }
  /** Inbound: sheds this request as `'critical' | 'normal' | 'sheddable'`. */
  priority(p) {
    this.newPriority = p;
    return this;
  }
  /** Inbound: metadata later filters, the endpoint and outbound filters can read. */
  meta(key, value) {
    this.metadata.push([key, String(value)]);
    return this;
  }
  /** Outbound only: replaces the response status. */
  status(code) {
    this.newStatus = code;
    return this;
  }
  /** Whether no change was asked for. */
  isEmpty() {
    return (
      this.set.length === 0 &&
      this.remove.length === 0 &&
      this.newPath === undefined &&
      this.newCluster === undefined &&
      this.newPriority === undefined &&
      this.metadata.length === 0 &&
      this.newStatus === undefined
    );
  }
  /** As an inbound action. A status set on inbound changes is an error, not dropped. */
  inbound() {
    if (this.newStatus !== undefined) {
      throw new Error('Changes.status() is for outbound filters; use respond() inbound');
    }
    if (this.isEmpty()) return CONTINUE;
    return {
      tag: 'modify',
      val: {
        setHeaders: this.set,
        removeHeaders: this.remove,
        path: this.newPath,
        cluster: this.newCluster,
        priority: this.newPriority,
        metadata: this.metadata,
      },
    };
  }
  /** As an outbound action. Path, cluster, priority and metadata are inbound-only. */
  outbound() {
    if (
      this.newPath !== undefined ||
      this.newCluster !== undefined ||
      this.newPriority !== undefined ||
      this.metadata.length > 0
    ) {
      throw new Error('path, cluster, priority and meta are inbound changes');
    }
    if (this.isEmpty()) return CONTINUE;
    return {
      tag: 'modify',
      val: { status: this.newStatus, setHeaders: this.set, removeHeaders: this.remove },
    };
  }
}

// ---- request helpers: work on a filter's view (`req.path()`) and an endpoint's record
// (`req.path`) alike ----

function pathOf(req) {
  return typeof req === 'string' ? req : typeof req.path === 'function' ? req.path() : req.path;
}

/** The path without the query. */
export function pathOnly(req) {
  const p = pathOf(req);
  const q = p.indexOf('?');
  return q < 0 ? p : p.slice(0, q);
}

/** Value of query parameter `name` (no percent-decoding); `undefined` if absent. */
export function query(req, name) {
  const p = pathOf(req);
  const q = p.indexOf('?');
  if (q < 0) return undefined;
  for (const kv of p.slice(q + 1).split('&')) {
    const eq = kv.indexOf('=');
    if (eq < 0) {
      if (kv === name) return '';
    } else if (kv.slice(0, eq) === name) {
      return kv.slice(eq + 1);
    }
  }
  return undefined;
}

/** First value of header `name` (case-insensitive) of a view or a record. */
export function header(req, name) {
  if (typeof req.header === 'function') return req.header(name);
  const n = name.toLowerCase();
  const hit = req.headers.find(([k]) => k.toLowerCase() === n);
  return hit ? hit[1] : undefined;
}

/** Value of cookie `name`, from every `cookie` header line. */
export function cookie(req, name) {
  const lines =
    typeof req.headerAll === 'function'
      ? req.headerAll('cookie')
      : req.headers.filter(([k]) => k.toLowerCase() === 'cookie').map(([, v]) => v);
  for (const line of lines) {
    for (const c of line.split(';')) {
      const eq = c.indexOf('=');
      if (eq >= 0 && c.slice(0, eq).trim() === name) return c.slice(eq + 1).trim();
    }
  }
  return undefined;
}

/** Metadata `key` set by an earlier inbound filter (the latest, if set twice). */
export function meta(req, key) {
  if (typeof req.metadata === 'function') return req.metadata(key);
  for (let i = req.metadata.length - 1; i >= 0; i--) {
    if (req.metadata[i][0] === key) return req.metadata[i][1];
  }
  return undefined;
}

// ---- host imports ----

let table;
function configTable() {
  // Fetched once per instance and kept: it cannot change while an instance lives (a new
  // manifest is a new plugin version with new instances), and instances serve many calls.
  if (table === undefined) {
    try {
      const v = JSON.parse(configAll());
      table = v !== null && typeof v === 'object' && !Array.isArray(v) ? v : {};
    } catch {
      table = {};
    }
  }
  return table;
}

/** The manifest's `[config]` table, read once per instance. */
export const config = {
  /** String value of `key` (non-strings as JSON text), or `undefined`. */
  get(key) {
    const v = configTable()[key];
    if (v === undefined) return undefined;
    return typeof v === 'string' ? v : JSON.stringify(v);
  },
  /** String value of `key`, or `dflt`. */
  getOr(key, dflt) {
    return this.get(key) ?? dflt;
  },
  /** `key` as it is in the table (numbers, booleans, arrays, tables); a string holding JSON
   * text (`"5"`) is parsed. `undefined` if absent. */
  parse(key) {
    const v = configTable()[key];
    if (typeof v !== 'string') return v;
    try {
      return JSON.parse(v);
    } catch {
      return v;
    }
  },
  /** The whole table. */
  all() {
    return configTable();
  },
};

/** Logging into the gateway's log, tagged with the plugin's name (truncated at 4 KiB,
 * rate-limited per plugin). */
export const log = {
  trace: (msg) => witLog('trace', String(msg)),
  debug: (msg) => witLog('debug', String(msg)),
  info: (msg) => witLog('info', String(msg)),
  warn: (msg) => witLog('warn', String(msg)),
  error: (msg) => witLog('error', String(msg)),
};

/** Plugin-scoped metrics on the gateway's `/metrics` (at most 64 names per plugin). */
export const metrics = {
  /** Adds `value` (default 1) to counter `name`. */
  count(name, value = 1) {
    counterAdd(name, BigInt(value));
  },
  /** Records `value` in histogram `name`. */
  observe(name, value) {
    histogramObserve(name, Number(value));
  },
};
