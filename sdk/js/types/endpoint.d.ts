/// <reference path="./interfaces/portcullis-plugin-config.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-log.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-metrics.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-types.d.ts" />
/// <reference path="./interfaces/portcullis-plugin-upstream.d.ts" />
declare module 'portcullis:plugin/endpoint@0.2.0' {
  export type Request = import('portcullis:plugin/types@0.2.0').Request;
  export type Response = import('portcullis:plugin/types@0.2.0').Response;
  export type * as PortcullisPluginConfig020 from 'portcullis:plugin/config@0.2.0'; // import portcullis:plugin/config@0.2.0
  export type * as PortcullisPluginLog020 from 'portcullis:plugin/log@0.2.0'; // import portcullis:plugin/log@0.2.0
  export type * as PortcullisPluginMetrics020 from 'portcullis:plugin/metrics@0.2.0'; // import portcullis:plugin/metrics@0.2.0
  export type * as PortcullisPluginTypes020 from 'portcullis:plugin/types@0.2.0'; // import portcullis:plugin/types@0.2.0
  export type * as PortcullisPluginUpstream020 from 'portcullis:plugin/upstream@0.2.0'; // import portcullis:plugin/upstream@0.2.0
  /**
  * Runs once per request routed to this endpoint. `req.body` holds the request body, up to
  * the manifest's `max_body_bytes` (default 64 KiB). The response is sent as returned
  * (outbound filters still apply). Same limits and failure policy as filters, with `timeout_ms` covering
  * the upstream calls too.
  */
  export function handle(req: Request): Response;
}
