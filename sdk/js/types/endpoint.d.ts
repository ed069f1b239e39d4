/// <reference path="./interfaces/portcullis-plugin-config.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-log.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-metrics.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-types.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-upstream.d.ts" />
declare module 'portcullis:plugin/endpoint@0.1.0' {
  export type Request = import('portcullis:plugin/types@0.1.0').Request;
  export type Response = import('portcullis:plugin/types@0.1.0').Response;
  export type * as PortcullisPluginConfig010 from 'portcullis:plugin/config@0.1.0'; // import portcullis:plugin/config@0.1.0
  export type * as PortcullisPluginLog010 from 'portcullis:plugin/log@0.1.0'; // import portcullis:plugin/log@0.1.0
  export type * as PortcullisPluginMetrics010 from 'portcullis:plugin/metrics@0.1.0'; // import portcullis:plugin/metrics@0.1.0
  export type * as PortcullisPluginTypes010 from 'portcullis:plugin/types@0.1.0'; // import portcullis:plugin/types@0.1.0
  export type * as PortcullisPluginUpstream010 from 'portcullis:plugin/upstream@0.1.0'; // import portcullis:plugin/upstream@0.1.0
  /**
  * Runs once per request routed to this endpoint. `req.body` holds the request body, up to
  * the manifest's `max_body_bytes`. The response is sent as returned (outbound filters
  * still apply). Same limits and failure policy as filters, with `timeout_ms` covering
  * the upstream calls too.
  */
  export function handle(req: Request): Response;
}
