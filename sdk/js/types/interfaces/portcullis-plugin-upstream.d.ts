/// <reference path="./portcullis-plugin-types.d.ts" />
declare module 'portcullis:plugin/upstream@0.2.0' {
  /**
   * Makes one call and waits for its reply. The guest is suspended, not a worker thread.
   */
  export function fetch(call: Call): Reply;
  /**
   * Makes all calls concurrently and returns their results in the same order. At most the
   * manifest's `max_fanout` calls may be given at once.
   */
  export function fetchAll(calls: Array<Call>): Array<Result<Reply, CallError>>;
  export type Header = import('portcullis:plugin/types@0.2.0').Header;
  /**
   * One call to a cluster.
   */
  export interface Call {
    /**
     * A `[[cluster]] name` from the gateway config.
     */
    cluster: string,
    /**
     * An HTTP method, e.g. `GET`; not a valid token: `invalid-call`. Replayable methods
     * (`GET`, `HEAD`, `OPTIONS`, ...) are retried once on another endpoint, as proxied
     * traffic is under a route with no `[route.retry]`.
     */
    method: string,
    /**
     * Path and query, e.g. `/ratings?user=1`; must start with `/` (else
     * `invalid-call`).
     */
    path: string,
    /**
     * Sent as given, at most the gateway's `[limits] max_headers` (default 100; more:
     * `limit-exceeded`); an invalid name or value is `invalid-call`. Hop-by-hop headers
     * are dropped; a traced request's `traceparent` is the gateway's.
     */
    headers: Array<Header>,
    /**
     * The request body; empty for none.
     */
    body: Uint8Array,
    /**
     * Mandatory, no default: the call fails with `timeout` after this long (also capped
     * by the request's remaining deadline). 0 is refused as `invalid-call`.
     */
    timeoutMs: number,
  }
  /**
   * The upstream's answer, whatever its status.
   */
  export interface Reply {
    status: number,
    /**
     * Names lower-case; values that are not UTF-8 are left out.
     */
    headers: Array<Header>,
    /**
     * At most the manifest's `max_response_bytes` (default 1 MiB), else the call fails
     * with `limit-exceeded`.
     */
    body: Uint8Array,
  }
  /**
   * Why a call produced no reply. Upstream 4xx/5xx are replies, not errors.
   */
  export type CallError = CallErrorTimeout | CallErrorConnectFailed | CallErrorOverloaded | CallErrorUnknownCluster | CallErrorLimitExceeded | CallErrorUpstreamReset | CallErrorInvalidCall;
  /**
   * `timeout-ms` or the request deadline passed.
   */
  export interface CallErrorTimeout {
    tag: 'timeout',
  }
  /**
   * No connection could be made to any endpoint tried.
   */
  export interface CallErrorConnectFailed {
    tag: 'connect-failed',
  }
  /**
   * The cluster shed the call (its concurrency limit is reached).
   */
  export interface CallErrorOverloaded {
    tag: 'overloaded',
  }
  /**
   * No cluster of that name.
   */
  export interface CallErrorUnknownCluster {
    tag: 'unknown-cluster',
  }
  /**
   * A per-request cap was hit (the manifest's `max_calls`, default 32;
   * `max_fanout`, default 16; `max_response_bytes`, default 1 MiB; the gateway's
   * `max_headers`); the string says which.
   */
  export interface CallErrorLimitExceeded {
    tag: 'limit-exceeded',
    val: string,
  }
  /**
   * The upstream closed or reset the connection before a complete reply.
   */
  export interface CallErrorUpstreamReset {
    tag: 'upstream-reset',
  }
  /**
   * New in 0.2.0 (0.1.0 reported these as `limit-exceeded`): the call itself is
   * malformed (a method that is not a token, a path not starting with `/`, an invalid
   * header, `timeout-ms` 0); the string says what. Retrying it unchanged fails again.
   */
  export interface CallErrorInvalidCall {
    tag: 'invalid-call',
    val: string,
  }
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
