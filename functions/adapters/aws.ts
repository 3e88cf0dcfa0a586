/**
 * Building the SDK clients and stores. Lambda handlers call these once at module
 * scope (cold start); the sandbox calls them with the emulators' endpoints.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { MissingEnvironmentError } from '../core/errors.ts';

export interface ClientOptions {
  /** Emulator endpoint; undefined in AWS. */
  readonly endpoint?: string;
  readonly region?: string;
  readonly credentials?: { accessKeyId: string; secretAccessKey: string };
}

export function documentClient(options: ClientOptions = {}): DynamoDBDocumentClient {
  return DynamoDBDocumentClient.from(new DynamoDBClient({ ...options }), {
    marshallOptions: { removeUndefinedValues: true },
  });
}

export function sqsClient(options: ClientOptions = {}): SQSClient {
  return new SQSClient({ ...options });
}

/** Reads a required environment variable; throws at cold start when it is missing. */
export function requireEnv(name: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  const value = env[name];
  if (value === undefined || value === '') throw new MissingEnvironmentError(name);
  return value;
}
