declare module 'portcullis:plugin/log@0.2.0' {
  /**
   * Writes one log line. Never fails, never blocks.
   */
  export function log(level: Level, message: string): void;
  /**
   * Maps to the gateway's `tracing` levels; what is shown is the gateway's log filter's
   * choice (by default `info` and above).
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
