declare module 'portcullis:plugin/config@0.2.0' {
  /**
   * The value of top-level key `key`, if present.
   */
  export function get(key: string): string | undefined;
  /**
   * The whole table as a JSON object.
   */
  export function all(): string;
}
