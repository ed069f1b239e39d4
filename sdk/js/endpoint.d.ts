// Types of portcullis-sdk/endpoint (endpoint.js).
/// <reference path="./types/endpoint.d.ts" />
import type { Request, Response, Header } from 'portcullis:plugin/types@0.2.0';

export type CallErrorKind =
  | 'timeout' | 'connect-failed' | 'overloaded' | 'unknown-cluster' | 'limit-exceeded'
  | 'upstream-reset' | 'invalid-call' | 'status' | 'bad-body';

export declare class CallError extends Error {
  readonly kind: CallErrorKind;
  readonly detail: string | number | undefined;
}
export declare class Reply {
  readonly status: number;
  readonly headers: Array<Header>;
  readonly body: Uint8Array;
  isSuccess(): boolean;
  header(name: string): string | undefined;
  text(): string;
  json(): unknown;
}
export declare class Call {
  constructor(method: string, cluster: string, path: string);
  static get(cluster: string, path: string): Call;
  timeout(ms: number): this;
  header(name: string, value: string | number): this;
  withBody(body: string | Uint8Array): this;
  forward(req: Request, names: string[]): this;
  forwardContext(req: Request): this;
}
export type CallResult = { ok: true; reply: Reply } | { ok: false; error: CallError };
export declare function fetch(call: Call): Reply;
export declare function fetchAll(calls: Call[]): CallResult[];
export declare function ok2xx(result: CallResult): Reply;
export declare function jsonResponse(status: number, value: unknown): Response;
