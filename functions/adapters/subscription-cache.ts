/**
 * What the distributor looks up about a resource on every turn (its webhooks,
 * and whether a stream on it is polled) kept in the container between turns.
 *
 * Each tenant has a subscriptions version in the control table. Every write that
 * changes what a lookup answers (a webhook created, changed, disabled or deleted;
 * a stream created or revived) bumps it after its own write. Each chunk of a turn
 * reads the version once, consistently, and uses what the cache holds for it:
 * one small read instead of a query and a read per resource and parent. Entries
 * also age out after `maxAgeMs`, in case a writer died between its write and the
 * bump.
 */
import { type DynamoDBDocumentClient, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { Webhook } from '../core/model.ts';
import { names } from './dynamo.ts';

const versionKey = (tenantId: string) => ({ pk: `tenant#${tenantId}`, sk: 'subscriptions' });

/** Bumps a tenant's subscriptions version: lookups cached under the old one are not used again. */
export async function bumpSubscriptions(client: DynamoDBDocumentClient, table: string, tenantId: string): Promise<void> {
  await client.send(
    new UpdateCommand({
      TableName: table,
      Key: versionKey(tenantId),
      UpdateExpression: 'ADD #version :one',
      ExpressionAttributeNames: names('version'),
      ExpressionAttributeValues: { ':one': 1 },
    }),
  );
}

interface Entry<T> {
  readonly version: number;
  readonly at: number;
  readonly value: Promise<T>;
}

export interface SubscriptionLookups {
  onResource(tenantId: string, resource: string): Promise<readonly Webhook[]>;
  /** When the stream on the resource expires (epoch ms); undefined when there is none. */
  streamExpiry(tenantId: string, resource: string): Promise<number | undefined>;
}

export class SubscriptionCache {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;
  readonly #lookups: SubscriptionLookups;
  readonly #maxAgeMs: number;
  readonly #maxEntries: number;
  readonly #webhooks = new Map<string, Entry<readonly Webhook[]>>();
  readonly #streams = new Map<string, Entry<number | undefined>>();
  readonly #versions = new Map<string, Promise<number>>();

  constructor(options: {
    client: DynamoDBDocumentClient;
    controlTable: string;
    lookups: SubscriptionLookups;
    maxAgeMs?: number;
    maxEntries?: number;
  }) {
    this.#client = options.client;
    this.#table = options.controlTable;
    this.#lookups = options.lookups;
    this.#maxAgeMs = options.maxAgeMs ?? 60_000;
    this.#maxEntries = options.maxEntries ?? 20_000;
  }

  /**
   * The tenant's subscriptions version, read consistently (0 before the first bump).
   * Turns that start together (one invocation's batch) share a read in flight:
   * an answer a few milliseconds old is within the `by_resource` index's own lag.
   */
  version(tenantId: string): Promise<number> {
    let pending = this.#versions.get(tenantId);
    if (!pending) {
      pending = this.#client
        .send(new GetCommand({ TableName: this.#table, Key: versionKey(tenantId), ConsistentRead: true }))
        .then((result) => Number(result.Item?.version ?? 0))
        .finally(() => this.#versions.delete(tenantId));
      this.#versions.set(tenantId, pending);
    }
    return pending;
  }

  webhooksOn(tenantId: string, resource: string, version: number, now: number): Promise<readonly Webhook[]> {
    return this.#cached(this.#webhooks, tenantId, resource, version, now, () => this.#lookups.onResource(tenantId, resource));
  }

  async streamActive(tenantId: string, resource: string, version: number, now: number): Promise<boolean> {
    // Polls push a stream's expiry out without a bump: an expiry kept from an
    // earlier turn that has passed since is read again.
    const kept = this.#streams.get(`${tenantId}|${resource}`);
    const keptExpiry = kept ? await kept.value.catch(() => undefined) : undefined;
    if (keptExpiry !== undefined && keptExpiry <= now) this.#streams.delete(`${tenantId}|${resource}`);
    const expiry = await this.#cached(this.#streams, tenantId, resource, version, now, () =>
      this.#lookups.streamExpiry(tenantId, resource),
    );
    return (expiry ?? 0) > now;
  }

  #cached<T>(
    map: Map<string, Entry<T>>,
    tenantId: string,
    resource: string,
    version: number,
    now: number,
    load: () => Promise<T>,
  ): Promise<T> {
    const key = `${tenantId}|${resource}`;
    const entry = map.get(key);
    if (entry && entry.version === version && now - entry.at < this.#maxAgeMs) return entry.value;
    if (map.size >= this.#maxEntries) map.clear();
    const value = load();
    map.set(key, { version, at: now, value });
    // A failed lookup is not kept.
    value.catch(() => {
      if (map.get(key)?.value === value) map.delete(key);
    });
    return value;
  }
}
