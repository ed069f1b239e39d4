declare module 'portcullis:plugin/metrics@0.2.0' {
  /**
   * Adds `value` to the counter `name`.
   */
  export function counterAdd(name: string, value: bigint): void;
  /**
   * Records `value` (seconds, bytes, any unit the name says) into the histogram `name`.
   */
  export function histogramObserve(name: string, value: number): void;
}
