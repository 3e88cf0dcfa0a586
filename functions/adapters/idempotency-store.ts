/**
 * Idempotency keys (SPEC §3 Events): one item per (tenant, key) for the retention
 * period. A key is claimed before its event is admitted, names the slot its event
 * was given before the event is stored, and is confirmed after, so a producer's
 * retry learns the original event id. A key whose first request died half-way is
 * settled by the next claim once the ingest grace has passed: claimed again if it
 * never got a slot, otherwise after the caller has found out whether its event was
 * stored in that slot (see `abandoned`).
 */
import { createHash } from 'node:crypto';
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { EventInput } from '../core/model.ts';
import { applied, epochSeconds, isConditionFailure, names } from './dynamo.ts';

const SK = 'idem';
// Tenant ids contain no '#', so the key after the second '#' is the producer's, verbatim.
const keyPk = (tenantId: string, key: string) => `idem#${tenantId}#${key}`;

/** JSON with every object's keys sorted: the same data however its producer ordered them. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * What a key's record remembers of its event (a hash of its resource, parents, type and
 * data), so that a key sent again with another event is told apart from a retry.
 */
export function eventFingerprint(input: Pick<EventInput, 'resource' | 'parents' | 'type' | 'data'>): string {
  return createHash('sha256')
    .update(canonical([input.resource, input.parents, input.type, input.data]))
    .digest('base64url')
    .slice(0, 22);
}

/** Where a key's event was given a slot: its object's resource, the slot, and when it was reserved. */
export interface KeyReservation {
  readonly resource: string;
  readonly slot: number;
  readonly reservedAt: number;
}

export type Claim =
  | { readonly claimed: true }
  | (ClaimedBefore & { readonly state: 'accepted' })
  /** Claimed by another request within the ingest grace, which may still be accepting it. */
  | (ClaimedBefore & { readonly state: 'pending' })
  /**
   * Pending with a slot reserved longer ago than the ingest grace: its request died (or
   * could not confirm) after reserving, perhaps after storing its event. The caller
   * finds out which (QueueStore.settleSlot), then confirms it or takes it over.
   */
  | (ClaimedBefore & { readonly state: 'abandoned'; readonly reservation: KeyReservation });

/** A key another event holds: its id, and its fingerprint (none on records written before fingerprints were kept). */
interface ClaimedBefore {
  readonly claimed: false;
  readonly eventId: string;
  readonly fingerprint?: string;
}

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
   * checked here too) or over a pending claim older than the ingest grace that never
   * named a slot (its ingest died before its event could be stored: see
   * `noteReservation`). A stale claim that did name one is answered `abandoned`.
   */
  async claim(tenantId: string, key: string, eventId: string, now: number, fingerprint?: string): Promise<Claim> {
    const claimed = await applied(
      this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: this.#pending(tenantId, key, eventId, now, fingerprint),
          ConditionExpression:
            'attribute_not_exists(#pk) OR #expires_at_ms < :now OR (#state = :pending AND #claimed_at < :stale AND attribute_not_exists(#slot))',
          ExpressionAttributeNames: names('pk', 'expires_at_ms', 'state', 'claimed_at', 'slot'),
          ExpressionAttributeValues: { ':now': now, ':pending': 'pending', ':stale': now - this.#graceMs },
        }),
      ),
    );
    if (claimed) return { claimed: true };
    const existing = await this.#client.send(
      new GetCommand({ TableName: this.#table, Key: { pk: keyPk(tenantId, key), sk: SK }, ConsistentRead: true }),
    );
    const item = existing.Item;
    if (!item) return this.claim(tenantId, key, eventId, now, fingerprint);
    // Event ids are new for each claim, so a pending record with this one is this claim's
    // own write: its first try applied and its answer was lost, and the SDK's second try
    // was refused. Answered as another's, it would hold the key pending for the grace.
    if (item.event_id === eventId && item.state === 'pending') return { claimed: true };
    const before: ClaimedBefore = {
      claimed: false,
      eventId: String(item.event_id),
      ...(typeof item.fingerprint === 'string' && { fingerprint: item.fingerprint }),
    };
    if (item.state === 'accepted') return { ...before, state: 'accepted' };
    // Judged, as the distributor judges a missing slot, from when the slot was reserved.
    if (item.slot !== undefined && Number(item.reserved_at) < now - this.#graceMs) {
      const reservation = { resource: String(item.resource), slot: Number(item.slot), reservedAt: Number(item.reserved_at) };
      return { ...before, state: 'abandoned', reservation };
    }
    return { ...before, state: 'pending' };
  }

  /**
   * Names the slot a claimed key's event was given, before the event is stored: a
   * retry that finds the claim abandoned then knows where to look. Only the claimant
   * can (its event id), and only while the claim is pending: one taken over since
   * (this ingest outlived the grace) is left alone, and the event must not be stored.
   */
  async noteReservation(tenantId: string, key: string, eventId: string, reservation: KeyReservation): Promise<boolean> {
    return applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: keyPk(tenantId, key), sk: SK },
          UpdateExpression: 'SET #resource = :resource, #slot = :slot, #reserved_at = :reserved_at',
          ConditionExpression: '#event_id = :id AND #state = :pending',
          ExpressionAttributeNames: names('resource', 'slot', 'reserved_at', 'event_id', 'state'),
          ExpressionAttributeValues: {
            ':resource': reservation.resource,
            ':slot': reservation.slot,
            ':reserved_at': reservation.reservedAt,
            ':id': eventId,
            ':pending': 'pending',
          },
        }),
      ),
    );
  }

  /**
   * Claims an abandoned key whose event was found never stored (its slot is void).
   * The condition, that the record is still the abandoned claim, admits one of
   * several retries that found it so at once; the others are answered by it.
   */
  async takeOver(
    tenantId: string,
    key: string,
    abandonedEventId: string,
    eventId: string,
    now: number,
    fingerprint?: string,
  ): Promise<boolean> {
    return applied(
      this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: this.#pending(tenantId, key, eventId, now, fingerprint),
          ConditionExpression: '#event_id = :abandoned AND #state = :pending',
          ExpressionAttributeNames: names('event_id', 'state'),
          ExpressionAttributeValues: { ':abandoned': abandonedEventId, ':pending': 'pending' },
        }),
      ),
    );
  }

  #pending(tenantId: string, key: string, eventId: string, now: number, fingerprint: string | undefined): Record<string, unknown> {
    return {
      pk: keyPk(tenantId, key),
      sk: SK,
      event_id: eventId,
      ...(fingerprint !== undefined && { fingerprint }),
      state: 'pending',
      claimed_at: now,
      expires_at_ms: now + this.#retentionMs,
      expires_at: epochSeconds(now + this.#retentionMs),
    };
  }

  /** Marks the key's event as accepted (stored); only with the claim's own event id. */
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

  /** Gives a key back when its event is known not to be stored (rejected, or its slot void), so a retry can use it at once. */
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
