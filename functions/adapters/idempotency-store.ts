/**
 * Idempotency keys (SPEC §3 Events): one item per (tenant, key) for the retention
 * period. A key is claimed before its event is admitted and confirmed after, so a
 * producer's retry learns the original event id, and a key whose first request
 * died half-way can be claimed again once the ingest grace has passed.
 */
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { epochSeconds, isConditionFailure, names } from './dynamo.ts';

const SK = 'idem';
// Tenant ids contain no '#', so the key after the second '#' is the producer's, verbatim.
const keyPk = (tenantId: string, key: string) => `idem#${tenantId}#${key}`;

export type Claim =
  | { readonly claimed: true }
  | { readonly claimed: false; readonly eventId: string; readonly state: 'pending' | 'accepted' };

export class IdempotencyStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;
  readonly #retentionMs: number;
  readonly #graceMs: number;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string; retentionDays: number; ingestGraceMs: number }) {
    this.#client = options.client;
    this.#table = options.tableName;
    this.#retentionMs = options.retentionDays * 86_400_000;
    this.#graceMs = options.ingestGraceMs;
  }

  /**
   * Claims a key for a new event id. The condition admits one claimant per key;
   * it lets a claim through over an expired record (TTL deletes late, so expiry is
   * checked here too) or over a pending claim older than the ingest grace (its
   * ingest died before confirming).
   */
  async claim(tenantId: string, key: string, eventId: string, now: number): Promise<Claim> {
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: {
            pk: keyPk(tenantId, key),
            sk: SK,
            event_id: eventId,
            state: 'pending',
            claimed_at: now,
            expires_at_ms: now + this.#retentionMs,
            expires_at: epochSeconds(now + this.#retentionMs),
          },
          ConditionExpression: 'attribute_not_exists(#pk) OR #expires_at_ms < :now OR (#state = :pending AND #claimed_at < :stale)',
          ExpressionAttributeNames: names('pk', 'expires_at_ms', 'state', 'claimed_at'),
          ExpressionAttributeValues: { ':now': now, ':pending': 'pending', ':stale': now - this.#graceMs },
        }),
      );
      return { claimed: true };
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
    const existing = await this.#client.send(
      new GetCommand({ TableName: this.#table, Key: { pk: keyPk(tenantId, key), sk: SK }, ConsistentRead: true }),
    );
    const item = existing.Item;
    if (!item) return this.claim(tenantId, key, eventId, now);
    return { claimed: false, eventId: String(item.event_id), state: item.state === 'accepted' ? 'accepted' : 'pending' };
  }

  /** Marks the key's event as accepted; only the claimant's own event id can. */
  async confirm(tenantId: string, key: string, eventId: string): Promise<void> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: keyPk(tenantId, key), sk: SK },
          UpdateExpression: 'SET #state = :accepted',
          ConditionExpression: '#event_id = :id',
          ExpressionAttributeNames: names('state', 'event_id'),
          ExpressionAttributeValues: { ':accepted': 'accepted', ':id': eventId },
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  /** Gives a key back when its event was not accepted, so a retry can use it. */
  async release(tenantId: string, key: string, eventId: string): Promise<void> {
    try {
      await this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: { pk: keyPk(tenantId, key), sk: SK },
          ConditionExpression: '#event_id = :id',
          ExpressionAttributeNames: names('event_id'),
          ExpressionAttributeValues: { ':id': eventId },
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }
}
