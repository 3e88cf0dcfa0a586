/**
 * Dollars per million delivered events at us-east-1 list prices: AWS's public
 * on-demand prices for US East (N. Virginia) as its pricing pages published them in
 * 2025, read again on 2026-12-02 in stored copies of those pages and in articles dated
 * 2025 (this machine has no internet to read the live pages), which found no change;
 * without free tiers, data transfer or CloudWatch:
 * - API Gateway REST APIs, first 333 million requests a month: $3.50 a million
 *   (https://aws.amazon.com/api-gateway/pricing/);
 * - Lambda on arm64: $0.20 a million requests, $0.0000133334 a GB-second, first
 *   tier (https://aws.amazon.com/lambda/pricing/);
 * - DynamoDB on-demand, after the November 2024 reduction: $0.625 a million write
 *   request units, $0.125 a million read request units
 *   (https://aws.amazon.com/dynamodb/pricing/on-demand/);
 * - SQS past the first million: $0.40 a million standard and $0.50 a million FIFO
 *   requests, each 64 KB chunk of a payload one request
 *   (https://aws.amazon.com/sqs/pricing/);
 * - SNS publishes: $0.50 a million (https://aws.amazon.com/sns/pricing/).
 */
import { FUNCTION_MEMORY_MB } from '../functions/definitions/environment.ts';
import type { CallCounts } from './accounting.ts';

export const PRICES = {
  apiGatewayRestPerMillion: 3.5,
  lambdaRequestsPerMillion: 0.2,
  lambdaArmPerGbSecond: 0.0000133334,
  dynamoWruPerMillion: 0.625,
  dynamoRruPerMillion: 0.125,
  sqsStandardPerMillion: 0.4,
  sqsFifoPerMillion: 0.5,
  snsPublishPerMillion: 0.5,
} as const;

/** For comparison (SPEC §7): managed fan-out services' per-delivery prices. */
export const ALTERNATIVES = { sns_http_per_million: 1.1, eventbridge_api_destinations_per_million: 1.2 } as const;

/**
 * What a subscriber's answer time adds to the figure, per 100 ms. The bench's receivers
 * answer in a millisecond or two on this machine; in AWS the delivery function is billed
 * for every millisecond it waits on a real endpoint, once per POST (at this memory).
 * Not in `costPerMillion`: how fast subscribers answer is theirs, so it is reported apart.
 */
export function endpointWaitPer100MsPerMillion(posts: number, delivered: number): number {
  const gbSeconds = posts * 0.1 * (FUNCTION_MEMORY_MB / 1024);
  return Math.round(((gbSeconds * PRICES.lambdaArmPerGbSecond) / Math.max(1, delivered)) * 1_000_000 * 1000) / 1000;
}

/**
 * Lambda's memory for one whole vCPU (AWS Lambda developer guide, "Configuring
 * Lambda function memory"); below it a function gets a proportional share.
 */
export const LAMBDA_MB_PER_VCPU = 1769;

export interface CostBreakdown {
  readonly api_gateway: number;
  readonly lambda: number;
  readonly dynamodb: number;
  readonly sqs: number;
  /** Webhook-disabled notices (SNS publishes). */
  readonly sns: number;
  readonly total: number;
}

/**
 * Cost per million delivered events. `apiRequests` are the API requests billed (the
 * baseline passes those that reached the API's Lambda: it sends none that API Gateway
 * refuses); the authorizer is invoked once per key per minute (API Gateway caches its answer).
 *
 * Lambda bills each invocation's duration at its memory. The sandbox measured those
 * durations with a whole core, where a function of FUNCTION_MEMORY_MB gets a share of
 * one: `functionCpuSeconds`, the CPU the functions used meanwhile, would take that many
 * times longer, so each of its seconds is billed that much longer too. (No overlap of
 * that CPU with the invocations' waits is assumed: an upper bound.)
 */
export function costPerMillion(
  counts: CallCounts,
  delivered: number,
  apiRequests: number,
  authorizerCalls: number,
  functionCpuSeconds = 0,
): CostBreakdown {
  const perEvent = (dollars: number) => (dollars / Math.max(1, delivered)) * 1_000_000;
  const invocations = Object.values(counts.invocations);
  const lambdaRequests = invocations.reduce((sum, i) => sum + i.count, 0) + authorizerCalls;
  const measuredSeconds = invocations.reduce((sum, i) => sum + i.ms, 0) / 1000;
  const slowerBy = Math.max(1, LAMBDA_MB_PER_VCPU / FUNCTION_MEMORY_MB);
  const gbSeconds = (measuredSeconds + functionCpuSeconds * (slowerBy - 1)) * (FUNCTION_MEMORY_MB / 1024);
  const api = perEvent((apiRequests / 1e6) * PRICES.apiGatewayRestPerMillion);
  const lambda = perEvent((lambdaRequests / 1e6) * PRICES.lambdaRequestsPerMillion + gbSeconds * PRICES.lambdaArmPerGbSecond);
  const dynamodb = perEvent((counts.wru / 1e6) * PRICES.dynamoWruPerMillion + (counts.rru / 1e6) * PRICES.dynamoRruPerMillion);
  const sqs = perEvent(
    (counts.sqsStandardRequests / 1e6) * PRICES.sqsStandardPerMillion + (counts.sqsFifoRequests / 1e6) * PRICES.sqsFifoPerMillion,
  );
  const sns = perEvent((counts.snsRequests / 1e6) * PRICES.snsPublishPerMillion);
  const round = (n: number) => Math.round(n * 1000) / 1000;
  return {
    api_gateway: round(api),
    lambda: round(lambda),
    dynamodb: round(dynamodb),
    sqs: round(sqs),
    sns: round(sns),
    total: round(api + lambda + dynamodb + sqs + sns),
  };
}
