/// <reference path="./portcullis-plugin-types.d.ts" />
declare module 'portcullis:plugin/upstream@0.1.0' {
  /**
   * Makes one call and waits for its reply. The guest is suspended, not a worker thread.
   */
  export function fetch(call: Call): Reply;
  /**
   * Makes all calls concurrently and returns their results in the same order. At most the
   * manifest's `max_fanout` calls may be given at once.
   */
  export function fetchAll(calls: Array<Call>): Array<Result<Reply, CallError>>;
  export type Header = import('portcullis:plugin/types@0.1.0').Header;
  /**
   * One call to a cluster.
   */
  export interface Call {
    /**
     * A `[[cluster]] name` from the gateway config.
     */
    cluster: string,
    method: string,
    /**
     * Path and query, e.g. `/ratings?user=1`.
     */
    path: string,
    headers: Array<Header>,
    body: Uint8Array,
    /**
     * Mandatory: the call fails with `timeout` after this long (also capped by the
     * request's remaining deadline). 0 is refused as `limit-exceeded`.
     */
    timeoutMs: number,
  }
  export interface Reply {
    status: number,
    headers: Array<Header>,
    body: Uint8Array,
  }
  /**
   * Why a call produced no reply. Upstream 4xx/5xx are replies, not errors.
   */
  export type CallError = CallErrorTimeout | CallErrorConnectFailed | CallErrorOverloaded | CallErrorUnknownCluster | CallErrorLimitExceeded | CallErrorUpstreamReset;
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
   * A per-request cap was hit (calls, fan-out width, response bytes); the string says
   * which.
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
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
