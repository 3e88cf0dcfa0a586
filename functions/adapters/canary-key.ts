/**
 * Where the canary keeps its tenant's API key. The canary publishes through the
 * public API like any app, so it needs the key itself, not a hash of it. In AWS the
 * key lives in a Secrets Manager secret that only the canary may read or write, not
 * in the control table, whose canary item the public canary receiver reads and whose
 * backups and exports copy every item. The sandbox, which has no Secrets Manager,
 * keeps it in an item of its own control table.
 */
import { GetSecretValueCommand, PutSecretValueCommand, type SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { type DynamoDBDocumentClient, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { keyKind } from '../core/keys.ts';
import { CONTROL_PK } from '../definitions/tables.ts';

export interface CanaryKeyStore {
  /** The key, or undefined before the canary has made its tenant. */
  get(): Promise<string | undefined>;
  put(apiKey: string): Promise<void>;
}

/** A tenant API key, as the tenants service makes them. */
const isApiKey = (value: unknown): value is string => typeof value === 'string' && keyKind(value) === 'tenant';

/**
 * The key in a Secrets Manager secret, as `{"apiKey":"sk_…"}`. The stack creates the
 * secret with a placeholder value, which reads as no key. A container keeps the key it
 * read or wrote: only the canary changes it, and the canary runs one at a time.
 */
export class SecretCanaryKey implements CanaryKeyStore {
  readonly #client: SecretsManagerClient;
  readonly #secretArn: string;
  #known: string | undefined;

  constructor(client: SecretsManagerClient, secretArn: string) {
    this.#client = client;
    this.#secretArn = secretArn;
  }

  async get(): Promise<string | undefined> {
    if (this.#known) return this.#known;
    const secret = await this.#client.send(new GetSecretValueCommand({ SecretId: this.#secretArn }));
    let apiKey: unknown;
    try {
      apiKey = (JSON.parse(secret.SecretString ?? '{}') as { apiKey?: unknown }).apiKey;
    } catch {
      apiKey = undefined;
    }
    this.#known = isApiKey(apiKey) ? apiKey : undefined;
    return this.#known;
  }

  async put(apiKey: string): Promise<void> {
    await this.#client.send(new PutSecretValueCommand({ SecretId: this.#secretArn, SecretString: JSON.stringify({ apiKey }) }));
    this.#known = apiKey;
  }
}

/** The sandbox's: an item of the control table that nothing else reads. */
export class TableCanaryKey implements CanaryKeyStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  async get(): Promise<string | undefined> {
    const result = await this.#client.send(
      new GetCommand({ TableName: this.#table, Key: { pk: CONTROL_PK.canaryKey, sk: 'key' }, ConsistentRead: true }),
    );
    const apiKey: unknown = result.Item?.apiKey;
    return isApiKey(apiKey) ? apiKey : undefined;
  }

  async put(apiKey: string): Promise<void> {
    await this.#client.send(new PutCommand({ TableName: this.#table, Item: { pk: CONTROL_PK.canaryKey, sk: 'key', apiKey } }));
  }
}
