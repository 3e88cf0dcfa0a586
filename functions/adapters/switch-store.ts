/**
 * Kill switches in the control table, all under one partition (there are few),
 * and a cache that every stage reads them through: at most `ttlMs` old (≤ 10 s),
 * so a switch takes effect within seconds without a read per event.
 */
import { DeleteCommand, type DynamoDBDocumentClient, PutCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { Switch } from '../core/switches.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { isConditionFailure, names } from './dynamo.ts';

const PK = CONTROL_PK.switches;

export class SwitchStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  async put(value: Switch): Promise<void> {
    await this.#client.send(new PutCommand({ TableName: this.#table, Item: { pk: PK, sk: value.id, ...value } }));
  }

  async list(): Promise<Switch[]> {
    const result = await this.#client.send(
      new QueryCommand({
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': PK },
        ConsistentRead: true,
      }),
    );
    return (result.Items ?? []).map((item) => ({
      id: String(item.id),
      scope: item.scope as Switch['scope'],
      tenant: String(item.tenant),
      target: item.target as string | undefined,
      action: item.action as Switch['action'],
      reason: String(item.reason ?? ''),
      created_at: String(item.created_at),
    }));
  }

  /** Removes a switch; returns it, or undefined when there was none. */
  async delete(id: string): Promise<Switch | undefined> {
    try {
      const result = await this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: { pk: PK, sk: id },
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
          ReturnValues: 'ALL_OLD',
        }),
      );
      const item = result.Attributes;
      return item ? (item as unknown as Switch) : undefined;
    } catch (error) {
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }
}

export interface SwitchReader {
  current(): Promise<readonly Switch[]>;
  /** Reads now, skipping the cache (after a switch was lifted). */
  refresh(): Promise<readonly Switch[]>;
}

/** No switches at all (tests of other mechanisms). */
export const NO_SWITCHES: SwitchReader = { current: async () => [], refresh: async () => [] };

/** Reads switches at most once per `ttlMs`; concurrent callers share one read. */
export class CachedSwitches implements SwitchReader {
  readonly #store: Pick<SwitchStore, 'list'>;
  readonly #ttlMs: number;
  readonly #now: () => number;
  #value: readonly Switch[] = [];
  #loadedAt = Number.NEGATIVE_INFINITY;
  #loading: Promise<readonly Switch[]> | undefined;

  constructor(store: Pick<SwitchStore, 'list'>, ttlMs: number, now: () => number = Date.now) {
    this.#store = store;
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  async refresh(): Promise<readonly Switch[]> {
    this.#loadedAt = Number.NEGATIVE_INFINITY;
    return this.current();
  }

  async current(): Promise<readonly Switch[]> {
    if (this.#now() - this.#loadedAt < this.#ttlMs) return this.#value;
    this.#loading ??= this.#store
      .list()
      .then((value) => {
        this.#value = value;
        this.#loadedAt = this.#now();
        return value;
      })
      .finally(() => {
        this.#loading = undefined;
      });
    return this.#loading;
  }
}
