declare module 'portcullis:plugin/types@0.1.0' {
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
     * The body, capped by the manifest's `max_body_bytes`.
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
    status: number,
    headers: Array<Header>,
    body: Uint8Array,
  }
  /**
   * What an inbound filter changes before routing. Fields left empty change nothing.
   */
  export interface RequestChanges {
    /**
     * Set (replace) these headers.
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
     * Send to this cluster instead of the route's.
     */
    cluster?: string,
    /**
     * Shed this request as this class instead of the route's.
     */
    priority?: Priority,
    /**
     * Add these metadata pairs; later filters and outbound filters read them.
     */
    metadata: Array<[string, string]>,
  }
  export interface Rejection {
    status: number,
    reason: string,
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
   * Refuse the request: the gateway answers `status` (4xx or 5xx) with `reason` as the
   * body and `portcullis-error: plugin-rejected`.
   */
  export interface InboundActionReject {
    tag: 'reject',
    val: Rejection,
  }
  /**
   * What an outbound filter changes. The body streams past filters untouched.
   */
  export interface ResponseChanges {
    status?: number,
    setHeaders: Array<Header>,
    removeHeaders: Array<string>,
  }
  export type OutboundAction = OutboundActionContinue | OutboundActionModify;
  export interface OutboundActionContinue {
    tag: 'continue',
  }
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
    * The body, only when the manifest declares `body = true`, capped by its
    * `max_body_bytes`; `none` otherwise (and always in `on-response`).
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
