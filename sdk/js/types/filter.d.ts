/// <reference path="./interfaces/portcullis-plugin-config.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-log.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-metrics.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-types.d.ts" />
declare module 'portcullis:plugin/filter@0.2.0' {
  export type RequestView = import('portcullis:plugin/types@0.2.0').RequestView;
  export type ResponseView = import('portcullis:plugin/types@0.2.0').ResponseView;
  export type InboundAction = import('portcullis:plugin/types@0.2.0').InboundAction;
  export type OutboundAction = import('portcullis:plugin/types@0.2.0').OutboundAction;
  export type * as PortcullisPluginConfig020 from 'portcullis:plugin/config@0.2.0'; // import portcullis:plugin/config@0.2.0
  export type * as PortcullisPluginLog020 from 'portcullis:plugin/log@0.2.0'; // import portcullis:plugin/log@0.2.0
  export type * as PortcullisPluginMetrics020 from 'portcullis:plugin/metrics@0.2.0'; // import portcullis:plugin/metrics@0.2.0
  export type * as PortcullisPluginTypes020 from 'portcullis:plugin/types@0.2.0'; // import portcullis:plugin/types@0.2.0
  /**
  * Runs after the request head is read and the request was admitted by load shedding,
  * before routing, in ascending `order` (default 0; ties by name) among inbound filters
  * whose manifest `[match]` matches (default: every request). May continue, change the
  * request, answer, or reject.
  * Changes are visible to the next filter. Routing happens after the last filter, on the
  * changed request.
  */
  export function onRequest(req: RequestView): InboundAction;
  /**
  * Runs when the response head is ready, before it is sent, in ascending `order` among
  * matching outbound filters, on every response to a request the gateway admitted: the
  * upstream's, an endpoint's, an inbound filter's `respond` / `reject`, and the gateway's
  * own errors (404, 413, 502, 503, 504, a `fail_closed` plugin's 5xx). A manifest with
  * `gateway_responses = false` (default `true`) skips the gateway's own errors and
  * filters' answers.
  * Not called for: load-shed 503s (shedding stays cheap under overload), admission 400s
  * (the request's identity could not be fixed), and what the HTTP codec answers before a
  * request exists (unparseable head, 431, the header-timeout 408); those carry only the
  * gateway's static `[http] error_headers`. `req` is the request as sent upstream, with
  * the metadata inbound filters set. May change the status and headers; the body streams
  * through untouched.
  */
  export function onResponse(req: RequestView, resp: ResponseView): OutboundAction;
}
