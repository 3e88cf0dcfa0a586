/**
 * Building the SDK clients and stores. Lambda handlers call these once at module
 * scope (cold start); the sandbox calls them with the emulators' endpoints.
 */
import http from 'node:http';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { MissingEnvironmentError } from '../core/errors.ts';

export interface ClientOptions {
  /** Emulator endpoint; undefined in AWS. */
  readonly endpoint?: string;
  readonly region?: string;
  readonly credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Most open connections; the SDK's default of 50 is too few for a sandbox's many long polls. */
  readonly maxSockets?: number;
}

/**
 * How long one try of a DynamoDB, SQS or SNS call may take in AWS before the SDK gives
 * it up and tries again (it retries a TimeoutError as it does a reset connection).
 * Without them a call whose connection hangs (a kept-alive socket gone dead while its
 * container was frozen, say) waits for the SDK's socket timeouts, 5 minutes for DynamoDB
 * and 15 for SQS: past every function's timeout. A distributor that times out holds its
 * batch's objects for the distribute queue's visibility timeout (120 s), and an ingest
 * keeps its producer until API Gateway answers 504 at 29 s. These services answer in
 * milliseconds, so a try still unanswered after 3 s is taken for lost, and three tries
 * fit in the shortest function timeout, the distributor's 20 s. A retried write may
 * meet what its first try did: the stores read such an outcome by `sentAgain`.
 */
export const AWS_CALL_TIMEOUTS = { connectionTimeout: 1_000, requestTimeout: 3_000, throwOnRequestTimeout: true } as const;

/**
 * The emulators get no timeouts: on a busy machine (two cores running a test suite)
 * they sometimes answer after seconds, where a retry would only add to their load.
 */
function requestHandler(options: ClientOptions) {
  const timeouts = options.endpoint === undefined ? AWS_CALL_TIMEOUTS : undefined;
  if (options.maxSockets === undefined) return timeouts ? { requestHandler: { ...timeouts } } : {};
  return { requestHandler: { ...timeouts, httpAgent: new http.Agent({ keepAlive: true, maxSockets: options.maxSockets }) } };
}

/**
 * Whether the SDK sent a call (or a failed one) more than once. It tries a call again
 * after a network error, even one that came after the first try had applied (its
 * answer lost), so what the second try meets may be the first try's doing.
 */
export function sentAgain(outcome: unknown): boolean {
  return ((outcome as { $metadata?: { attempts?: number } } | undefined)?.$metadata?.attempts ?? 1) > 1;
}

/**
 * Takes the SDK's logger middleware off a client. sluice gives the SDK no logger (it
 * logs its own calls' outcomes with Powertools), yet the middleware copies every
 * call's input and output through the SDK's sensitive-data filter for the no-op
 * logger anyway: about 30 µs of a call's 600 µs of CPU.
 */
export function withoutSdkLogging<C extends { middlewareStack: { remove(name: string): boolean } }>(client: C): C {
  client.middlewareStack.remove('loggerMiddleware');
  return client;
}

/** DynamoDB's low-level client, as the document client wraps it. */
export function dynamoClient(options: ClientOptions = {}): DynamoDBClient {
  const { maxSockets: _, ...rest } = options;
  return withoutSdkLogging(new DynamoDBClient({ ...rest, ...requestHandler(options) }));
}

export function documentClient(options: ClientOptions = {}): DynamoDBDocumentClient {
  return DynamoDBDocumentClient.from(dynamoClient(options), { marshallOptions: { removeUndefinedValues: true } });
}

export function sqsClient(options: ClientOptions = {}): SQSClient {
  const { maxSockets: _, ...rest } = options;
  return withoutSdkLogging(new SQSClient({ ...rest, ...requestHandler(options) }));
}

/** Reads a required environment variable; throws at cold start when it is missing. */
export function requireEnv(name: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  const value = env[name];
  if (value === undefined || value === '') throw new MissingEnvironmentError(name);
  return value;
}
