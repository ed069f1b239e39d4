declare module 'portcullis:plugin/types@0.2.0' {
  /**
   * One header field. Names are lower-case; a name may repeat (e.g. `set-cookie`).
   * Values are strings: a header value that is not valid UTF-8 is not shown to plugins.
   */
  export type Header = [string, string];
  /**
   * Load-shedding class (see the gateway's `[limits]`): as utilisation rises,
   * `sheddable` goes first, then `normal`; `critical` only at 100%.
   * # Variants
   * 
   * ## `"critical"`
   * 
   * ## `"normal"`
   * 
   * ## `"sheddable"`
   */
  export type Priority = 'critical' | 'normal' | 'sheddable';
  /**
   * The request as an endpoint sees it.
   */
  export interface Request {
    /**
     * Upper-case method, e.g. `GET`.
     */
    method: string,
    /**
     * Path and query, e.g. `/api/home?user=1`. The path is the normalized one every
     * route, filter match and the upstream see (dot segments removed, unreserved escapes
     * decoded, slashes merged under `[http]`); the query is as received.
     */
    path: string,
    /**
     * Host the client asked for (`:authority` or `Host`), empty if none.
     */
    authority: string,
    headers: Array<Header>,
    /**
     * Client address as `ip:port`.
     */
    clientAddr: string,
    /**
     * The body, capped by the manifest's `max_body_bytes` (default 64 KiB); `none` when
     * the request has none.
     */
    body?: Uint8Array,
    /**
     * Metadata set by earlier inbound filters of this request, in the order set.
     */
    metadata: Array<[string, string]>,
    /**
     * Name of the route the request matched before filters ran, empty if none.
     */
    route: string,
  }
  /**
   * A complete response a plugin produces.
   */
  export interface Response {
    /**
     * 200-599; anything else is the plugin's `bad-output`.
     */
    status: number,
    /**
     * Sent as given, checked against the gateway's `[limits]` (`max_headers`, default
     * 100; `max_header_bytes`, default 64 KiB). Framing and hop-by-hop headers
     * (`content-length`, `transfer-encoding`, `connection`, ...) are the gateway's and
     * are dropped. No header is added by default, not even `content-type`.
     */
    headers: Array<Header>,
    /**
     * At most `[plugins] max_body_bytes` (default 1 MiB), or it is `bad-output`.
     */
    body: Uint8Array,
  }
  /**
   * What an inbound filter changes before routing. Fields left empty (the default of
   * every field) change nothing. All or nothing: a change the gateway refuses (an invalid
   * header, a framing header, more than `[limits] max_headers`, a path admission would
   * refuse) is the filter's `bad-output` and leaves the request as it was.
   */
  export interface RequestChanges {
    /**
     * Set (replace every value of) these headers; of one name set twice, the last wins.
     */
    setHeaders: Array<Header>,
    /**
     * Remove these headers (applied before `set-headers`).
     */
    removeHeaders: Array<string>,
    /**
     * New path and query, e.g. `/v2/items?x=1`; must start with `/`. The path is
     * normalized like a client's before the next filter and routing; one admission
     * would refuse (`/../x`) is the filter's `bad-output`.
     */
    path?: string,
    /**
     * Send to this cluster instead of the route's (`none`: the route's).
     */
    cluster?: string,
    /**
     * Shed this request as this class instead of the route's (`none`: the route's,
     * whose default is `normal`).
     */
    priority?: Priority,
    /**
     * Add these metadata pairs; later filters and outbound filters read them. At most
     * 64 pairs per request, each key and value at most 1 KiB.
     */
    metadata: Array<[string, string]>,
  }
  /**
   * A refusal, answered by the gateway as `status` with `reason` as a `text/plain` body
   * and `portcullis-error: plugin-rejected`.
   */
  export interface Rejection {
    /**
     * 400-599; anything else is answered as 403.
     */
    status: number,
    /**
     * The body (a newline is added). Control characters are dropped and it is cut at
     * 512 characters.
     */
    reason: string,
    /**
     * New in 0.2.0: headers added to the answer, e.g. `www-authenticate` on a 401 or
     * `retry-after` on a 429. Empty by default. Checked like a `response`'s headers;
     * `portcullis-error` and `content-type` are the gateway's too. Naming one, or an
     * invalid or framing header, counts as the filter's `bad-output`, and the request is
     * still rejected, without these headers (whatever the failure policy: a refusal
     * never turns into a pass).
     */
    headers: Array<Header>,
  }
  /**
   * What an inbound filter decided.
   */
  export type InboundAction = InboundActionContinue | InboundActionModify | InboundActionRespond | InboundActionReject;
  /**
   * Go on unchanged to the next filter, then routing.
   */
  export interface InboundActionContinue {
    tag: 'continue',
  }
  /**
   * Go on with these changes applied.
   */
  export interface InboundActionModify {
    tag: 'modify',
    val: RequestChanges,
  }
  /**
   * Answer the client directly; no upstream is called.
   */
  export interface InboundActionRespond {
    tag: 'respond',
    val: Response,
  }
  /**
   * Refuse the request: the gateway answers with the rejection (see `rejection`). The
   * request's passport and access log record it as rejected by this plugin.
   */
  export interface InboundActionReject {
    tag: 'reject',
    val: Rejection,
  }
  /**
   * What an outbound filter changes. The body streams past filters untouched. Fields left
   * empty (the default of every field) change nothing; all or nothing, as for
   * `request-changes`.
   */
  export interface ResponseChanges {
    /**
     * Replace the status (200-599; `none`: keep it).
     */
    status?: number,
    /**
     * Set (replace every value of) these headers.
     */
    setHeaders: Array<Header>,
    /**
     * Remove these headers (applied before `set-headers`).
     */
    removeHeaders: Array<string>,
  }
  /**
   * What an outbound filter decided.
   */
  export type OutboundAction = OutboundActionContinue | OutboundActionModify;
  /**
   * Send the response as it is.
   */
  export interface OutboundActionContinue {
    tag: 'continue',
  }
  /**
   * Send it with these changes applied.
   */
  export interface OutboundActionModify {
    tag: 'modify',
    val: ResponseChanges,
  }
  
  export class RequestView {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * Upper-case method, e.g. `GET`.
    */
    method(): string;
    /**
    * Path and query, e.g. `/api/home?user=1`. The path is the normalized one every
    * route, filter match and the upstream see (dot segments removed, unreserved escapes
    * decoded, slashes merged under `[http]`); the query is as received.
    */
    path(): string;
    /**
    * Host the client asked for (`:authority` or `Host`), empty if none.
    */
    authority(): string;
    /**
    * First value of header `name` (case-insensitive), `none` if absent or not UTF-8.
    */
    header(name: string): string | undefined;
    /**
    * Every value of header `name`, in order (e.g. several `cookie` lines).
    */
    headerAll(name: string): Array<string>;
    /**
    * All headers, names lower-case, in order. Values that are not UTF-8 are left out.
    */
    headers(): Array<Header>;
    /**
    * Client address as `ip:port`.
    */
    clientAddr(): string;
    /**
    * The body, only when the manifest declares `body = true` (default `false`), capped
    * by its `max_body_bytes` (default 64 KiB); `none` otherwise (and always in
    * `on-response`).
    */
    body(): Uint8Array | undefined;
    /**
    * The latest value earlier inbound filters set for metadata `key`.
    */
    metadata(key: string): string | undefined;
    /**
    * Every metadata pair set by earlier inbound filters, in the order set.
    */
    allMetadata(): Array<[string, string]>;
    /**
    * Name of the route the request matched before filters ran, empty if none.
    */
    route(): string;
  }
  
  export class ResponseView {
    /**
     * This type does not have a public constructor.
     */
    private constructor();
    /**
    * The status as it stands: the upstream's, or the gateway's own (404, 502, ...),
    * or as an earlier outbound filter set it.
    */
    status(): number;
    /**
    * First value of header `name` (case-insensitive), `none` if absent or not UTF-8.
    */
    header(name: string): string | undefined;
    /**
    * All headers, names lower-case, in order. Values that are not UTF-8 are left out.
    */
    headers(): Array<Header>;
  }
}
