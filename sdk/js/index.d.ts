// Types of portcullis-sdk (index.js). The WIT's own declarations (records, variants, the
// request and response views) are generated into types/ by `node gen-types.mjs`.
/// <reference path="./types/filter.d.ts" />
/// <reference path="./types/endpoint.d.ts" />

import type {
  InboundAction,
  OutboundAction,
  Priority,
  Request,
  RequestView,
  Header,
} from 'portcullis:plugin/types@0.2.0';

export type { InboundAction, OutboundAction, Priority, Request, RequestView, Header };

/** Go on unchanged (inbound or outbound). */
export declare const CONTINUE: { tag: 'continue' };
/** Bytes of `body`: a string is UTF-8 encoded. */
export declare function bytes(body?: string | Uint8Array | null): Uint8Array;
/** A direct answer from an inbound filter (`text/plain` unless `headers` says otherwise). */
export declare function respond(status: number, body?: string | Uint8Array, headers?: Array<[string, string]>): InboundAction;
/** Rejects the request with `status` (400-599) and `reason` (`portcullis-error:
 * plugin-rejected`), adding `headers` (WIT 0.2.0; default none) to the answer, e.g.
 * `reject(401, 'missing key', [['www-authenticate', 'Bearer']])`. */
export declare function reject(status: number, reason: string, headers?: Array<[string, string]>): InboundAction;

/** Builder for request (inbound) or response (outbound) changes. */
export declare class Changes {
  setHeader(name: string, value: string | number): this;
  removeHeader(name: string): this;
  /** Inbound only. */
  path(pathAndQuery: string): this;
  /** Inbound only. */
  cluster(name: string): this;
  /** Inbound only. */
  priority(p: Priority): this;
  /** Inbound only. */
  meta(key: string, value: string | number): this;
  /** Outbound only. */
  status(code: number): this;
  isEmpty(): boolean;
  /** `CONTINUE` when empty; throws if an outbound-only change was asked for. */
  inbound(): InboundAction;
  /** `CONTINUE` when empty; throws if an inbound-only change was asked for. */
  outbound(): OutboundAction;
}

/** A filter's view or an endpoint's record (or a path string, for `pathOnly`/`query`). */
export type AnyRequest = RequestView | Request;
export declare function pathOnly(req: AnyRequest | string): string;
export declare function query(req: AnyRequest | string, name: string): string | undefined;
export declare function header(req: AnyRequest, name: string): string | undefined;
export declare function cookie(req: AnyRequest, name: string): string | undefined;
export declare function meta(req: AnyRequest, key: string): string | undefined;

/** The manifest's `[config]` table, read once per instance. */
export declare const config: {
  get(key: string): string | undefined;
  getOr(key: string, dflt: string): string;
  parse(key: string): unknown;
  all(): Record<string, unknown>;
};
export declare const log: {
  trace(msg: unknown): void;
  debug(msg: unknown): void;
  info(msg: unknown): void;
  warn(msg: unknown): void;
  error(msg: unknown): void;
};
export declare const metrics: {
  count(name: string, value?: number | bigint): void;
  observe(name: string, value: number): void;
};
