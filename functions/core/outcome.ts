/**
 * The one place that decides what an attempt's result means (STYLE habit 4):
 * delivered, retry, or disable the webhook.
 */

export type AttemptDecision = 'delivered' | 'retry' | 'disable';

export function decideAttempt(statusCode: number | undefined): AttemptDecision {
  if (statusCode === undefined) return 'retry';
  if (statusCode >= 200 && statusCode < 300) return 'delivered';
  if (statusCode === 410) return 'disable';
  return 'retry';
}
