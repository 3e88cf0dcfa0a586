/**
 * The ports through which the domain reports what happened. Lambda functions back
 * them with Powertools (EMF metrics, JSON logs); the sandbox keeps metrics in
 * memory for its alarm evaluation. Dimensions must stay low-cardinality: never a
 * tenant, resource or webhook id.
 */

export interface MetricsPort {
  count(name: string, value?: number, dimensions?: Readonly<Record<string, string>>): void;
  /** A duration in seconds, one data point (an alarm on it takes the maximum); where a stage reports one. */
  seconds?(name: string, value: number): void;
}

export interface LoggerPort {
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
  error(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

export const NO_METRICS: MetricsPort = { count: () => {} };
export const NO_LOGS: LoggerPort = { info: () => {}, warn: () => {}, error: () => {} };
