/**
 * The per-object queues in DynamoDB (SPEC §2 Per-object queue). One partition per
 * (tenant, resource): a meta item and one item per reserved slot. Every write is a
 * conditional write on the meta item; no transactions.
 */
import { randomBytes } from 'node:crypto';
import { BatchGetCommand, type DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { type AdmissionLimits, advanceTat, emissionInterval, type RejectReason, tatLimit } from '../core/admission.ts';
import { eachAtOnce } from '../core/at-once.ts';
import { FencedOutError, LeaseHeldError } from '../core/errors.ts';
import { scheduleShard, scheduleShardKey } from '../core/keys.ts';
import type { EventInput, ObjectKey } from '../core/model.ts';
import { type PendingItem, type QueueMeta, quietTurnAllowed, type TurnRecord } from '../core/turn.ts';
import { SCHEDULE_INDEX, SCHEDULE_SHARDS } from '../definitions/tables.ts';
import { applied, batchWrite, epochSeconds, isConditionFailure, names, queryPages, refusedOnRetry } from './dynamo.ts';

const META_SK = 'meta';
/** Beside the meta item: the object's counts of events refused for its rate or queue cap. */
const REJECTED_SK = 'rejected';
const SLOT_PREFIX = 'e#';
const SLOT_DIGITS = 15;
/** How many BatchGetItem requests readMetas has under way at once. */
const READ_METAS_AT_ONCE = 8;
/** Meta items per BatchGetItem request of `readMetas` (DynamoDB's most). */
export const METAS_PER_READ = 100;
const ALL_SHARDS = Array.from({ length: SCHEDULE_SHARDS }, (_, shard) => shard);

function objectPk(key: ObjectKey): string {
  // Resource ids cannot contain '#', so this key is unambiguous.
  return `${key.tenantId}#${key.resource}`;
}

function parseObjectPk(pk: string): ObjectKey {
  const at = pk.indexOf('#');
  return { tenantId: pk.slice(0, at), resource: pk.slice(at + 1) };
}

function slotSk(slot: number): string {
  return SLOT_PREFIX + String(slot).padStart(SLOT_DIGITS, '0');
}

/** The key of a slot's event item: what DynamoDB's TTL deletes once it has expired. */
export function slotItemKey(key: ObjectKey, slot: number): { pk: string; sk: string } {
  return { pk: objectPk(key), sk: slotSk(slot) };
}

export interface Reservation {
  /** The first reserved slot; the request's events take firstSlot, firstSlot + 1, … */
  readonly firstSlot: number;
  /** True when the event was kept on the meta item by this same write: there is nothing more to write. */
  readonly inlined: boolean;
  /** True when this reservation flipped the object from idle to scheduled: ring the doorbell. */
  readonly flipped: boolean;
  /** The object's depth after this reservation. */
  readonly depth: number;
  /** The object's rate tat after this reservation (epoch ms). */
  readonly tat: number;
  /**
   * For an event kept inline on an object with nothing else to do (no turn record,
   * no drop count, no live lease): the meta item as this write found it and the
   * event as stored, which its doorbell carries so the quiet turn need not read them.
   */
  readonly quiet?: QuietSnapshot;
}

/** What a quiet turn needs to know of its object: see `Reservation.quiet`. */
export interface QuietSnapshot {
  readonly cursor: number;
  readonly seq: number;
  /** The inline event in its stored form. */
  readonly stored: Record<string, unknown>;
}

export interface AcceptedEvent {
  readonly id: string;
  readonly slot: number;
  readonly input: EventInput;
  readonly createdAt: string;
}

type MetaItem = Record<string, unknown>;

/** What a reconciler run found in one shard of the `by_schedule` index (see noteShardSummaries). */
export interface ShardSummary {
  /** Objects above 80 % of their cap. */
  readonly nearCap: number;
  readonly maxDepth: number;
  /** Objects with events waiting or a turn due. */
  readonly scheduled: number;
  /**
   * The shard's deepest objects with events waiting, deepest first, at most
   * SHARD_DEEPEST: candidates for `GET /v1/admin/queues`, which reads their depth afresh
   * (a depth here is as old as the run). Empty when the shard lists none.
   */
  readonly deepest: ReadonlyArray<{ readonly key: ObjectKey; readonly depth: number }>;
  /** When the run noted it (epoch ms). */
  readonly at: number;
}

/**
 * How many of a shard's deepest objects its summary names. The summaries' item is
 * written every reconciler run (an UpdateItem bills the whole item, 1 KB a write unit),
 * so each is kept short: an object as `[pk, depth]`, some 60 bytes for a 20-character
 * resource (at most about 240, for a 200-character one), 5 to a shard, 16 shards: some
 * 5 KB, 5 more write units a run (at most about 19) while objects wait in every shard,
 * and none when none do. Five a shard are 80 candidates for a view of 20.
 */
export const SHARD_DEEPEST = 5;

/** The reconciler's item of shard summaries: in no object's partition, and in no index. */
const SHARD_SUMMARIES_KEY = { pk: 'reconciler', sk: 'shards' } as const;

/** The shards' summaries as the item keeps them; a summary noted before they named their deepest objects names none. */
function toShardSummaries(item: Record<string, unknown> | undefined): Map<number, ShardSummary> {
  const noted = new Map<number, ShardSummary>();
  for (let shard = 0; shard < SCHEDULE_SHARDS; shard++) {
    const summary = item?.[`shard_${shard}`] as Record<string, unknown> | undefined;
    if (!summary) continue;
    const deepest = (Array.isArray(summary.deepest) ? (summary.deepest as unknown[][]) : []).map(([pk, depth]) => ({
      key: parseObjectPk(String(pk)),
      depth: Number(depth ?? 0),
    }));
    noted.set(shard, {
      nearCap: Number(summary.nearCap ?? 0),
      maxDepth: Number(summary.maxDepth ?? 0),
      scheduled: Number(summary.scheduled ?? 0),
      deepest,
      at: Number(summary.at ?? 0),
    });
  }
  return noted;
}

/** An object's events refused for its limits, as the API's containers counted them (see QueueStore.noteRejected). */
export interface RejectedCounts {
  readonly rate_limited: number;
  readonly queue_full: number;
  /** When the last of them was counted (ISO 8601). */
  readonly last_at: string;
}

/**
 * The largest event (type, parents and data, serialized) kept on an idle object's
 * meta item. With the meta item's own attributes it stays under 1 KiB, the unit
 * DynamoDB bills each write of the item by.
 */
export const INLINE_MAX_BYTES = 400;

/** Whether an event is small enough to be kept on the meta item. */
export function fitsInline(input: EventInput): boolean {
  return Buffer.byteLength(JSON.stringify([input.type, input.parents, input.data])) <= INLINE_MAX_BYTES;
}

/** The stored form of an event, on its slot item or inline on the meta item (less its key and slot). */
function eventAttributes(event: Omit<AcceptedEvent, 'slot'>, reservedAt: number, retentionMs: number): Record<string, unknown> {
  return {
    id: event.id,
    resource: event.input.resource,
    parents: [...event.input.parents],
    type: event.input.type,
    data: JSON.stringify(event.input.data),
    created_at: event.createdAt,
    reserved_at: reservedAt,
    expires_at: epochSeconds(reservedAt + retentionMs),
  };
}

function toMeta(item: MetaItem, now?: number): QueueMeta {
  const cursor = Number(item.cursor ?? 0);
  return {
    depth: Number(item.depth ?? 0),
    lastSlot: Number(item.last_slot ?? 0),
    cursor,
    seq: Number(item.seq ?? 0),
    reservedAt: Number(item.reserved_at ?? 0),
    scheduled: item.scheduled === true,
    fence: Number(item.fence ?? 0),
    turn: item.turn as TurnRecord | undefined,
    tat: optionalNumber(item.tat),
    scheduledAt: optionalNumber(item.scheduled_at),
    ...(item.floor_at !== undefined && { floorAt: Number(item.floor_at) }),
    ...(item.scheduled_retention_ms !== undefined && { scheduledRetentionMs: Number(item.scheduled_retention_ms) }),
    turnAt: optionalNumber(item.turn_at),
    leaseUntil: optionalNumber(item.lease_until),
    pausedAt: optionalNumber(item.paused_at),
    ...(item.rerung !== undefined && { rerung: String(item.rerung) }),
    switchDropped: Number(item.switch_dropped ?? 0),
    switchDroppedParents: [...((item.switch_dropped_parents as Set<string> | undefined) ?? [])],
    inline: item.inline ? toPending({ ...(item.inline as Record<string, unknown>), slot: cursor + 1 }, now) : undefined,
  };
}

function optionalNumber(value: unknown): number | undefined {
  return value === undefined ? undefined : Number(value);
}

function toPending(item: Record<string, unknown>, now?: number): PendingItem {
  return {
    id: String(item.id ?? ''),
    slot: Number(item.slot),
    resource: String(item.resource ?? ''),
    parents: (item.parents as string[] | undefined) ?? [],
    type: String(item.type ?? ''),
    data: item.data === undefined ? null : JSON.parse(item.data as string),
    createdAt: String(item.created_at ?? ''),
    reservedAt: Number(item.reserved_at ?? 0),
    void: item.void === true,
    // TTL deletes late, so a read checks expiry itself.
    expired: now !== undefined && item.void !== true && Number(item.expires_at ?? Number.POSITIVE_INFINITY) * 1000 <= now,
    ...(item.void !== true && item.expires_at !== undefined && { expiresAt: Number(item.expires_at) * 1000 }),
  };
}

/** An inline event as the turn record keeps it (its slot is the record's fromSlot). */
function inlineRecord(event: PendingItem, retentionMs: number): Record<string, unknown> {
  return {
    expires_at: epochSeconds(event.reservedAt + retentionMs),
    id: event.id,
    resource: event.resource,
    parents: [...event.parents],
    type: event.type,
    data: JSON.stringify(event.data),
    created_at: event.createdAt,
    reserved_at: event.reservedAt,
  };
}

/** How a turn's last write left the object: idle, or still scheduled with the lease released (ring again). */
export type TurnEnd = 'idle' | 'pending';

/** A turn that committed its chunk and keeps the lease, with the meta item as that write left it. */
export interface StillHeld {
  readonly held: QueueMeta;
}

/** What a turn's last write checks: a holder's fence, or for a quiet turn that no lease is held. */
type TurnGuard = { readonly fence: number } | { readonly unleasedAt: number };

/** The chunk a turn's last write commits: the cursor it read from, and where it leaves the cursor, seq and depth. */
interface ChunkCommit {
  readonly previousCursor: number;
  readonly cursor: number;
  readonly seq: number;
  readonly consumed: number;
  readonly removeInline: boolean;
  /** The earliest the slots after `cursor` can have been reserved, when known (QueueMeta.floorAt). */
  readonly floorAt?: number | undefined;
}

/** One way a turn's last write may go, on its own condition, and what it answers when it applies. */
interface EndForm<R> {
  readonly update: string;
  readonly condition: string;
  readonly names: readonly string[];
  readonly values: Record<string, unknown>;
  /** Whether the write returns the item as it left it (for `answer`). */
  readonly returnsItem?: boolean;
  readonly answer: (item: Record<string, unknown> | undefined) => R;
}

/** How an applied end of a turn left an object: idle, or still scheduled (ring again). */
const endedAs = (meta: QueueMeta): TurnEnd => (meta.scheduled ? 'pending' : 'idle');

export interface QueueStoreOptions {
  readonly client: DynamoDBDocumentClient;
  readonly tableName: string;
  readonly retentionDays: number;
}

export class QueueStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;
  readonly #retentionMs: number;

  constructor(options: QueueStoreOptions) {
    this.#client = options.client;
    this.#table = options.tableName;
    this.#retentionMs = options.retentionDays * 86_400_000;
  }

  /**
   * Reserves `count` slots, if both the cap and the object's rate allow all of
   * them; undefined when the conditions refuse (the caller reads the meta item and
   * decides how many may enter). One conditional write checks the cap, advances the
   * rate's tat, counts depth and flips `scheduled`; its old `scheduled` value tells
   * the one ingest that flipped the object from idle to ring the doorbell.
   *
   * GCRA needs max(tat, now), which an update expression cannot compute, so there
   * are two forms: `busy` (tat is in the future: add to it) and idle (tat is in the
   * past or absent: restart it from now). The caller picks the likely one.
   */
  async reserve(
    key: ObjectKey,
    count: number,
    limits: AdmissionLimits,
    now: number,
    busy: boolean,
    inline?: Omit<AcceptedEvent, 'slot'>,
  ): Promise<Reservation | undefined> {
    // More than the cap never fits, and the condition below cannot tell for an object
    // with no meta item yet (no depth to compare): refused here, as the write would be.
    if (count > limits.cap) return undefined;
    const interval = emissionInterval(limits);
    // An idle, empty object can keep one event on its meta item: it is then the event at
    // cursor + 1, and this one write both reserves and stores it. The condition refuses
    // when anything is pending; the caller then reserves without it.
    const stored = inline ? eventAttributes(inline, now, this.#retentionMs) : undefined;
    const keep = stored
      ? {
          set: ', #inline = :inline',
          condition: ' AND (attribute_not_exists(#depth) OR #depth = :zero) AND attribute_not_exists(#inline)',
          names: ['inline'],
          values: { ':inline': stored },
        }
      : { set: '', condition: '', names: [], values: {} };
    const rate = busy
      ? {
          set: '#tat = #tat + :spend',
          condition: '#depth <= :room AND #tat > :now AND #tat <= :tat_limit',
          values: { ':spend': count * interval, ':tat_limit': tatLimit(count, now, limits) },
        }
      : {
          set: '#tat = :tat',
          condition: '(attribute_not_exists(#depth) OR #depth <= :room) AND (attribute_not_exists(#tat) OR #tat <= :now)',
          values: { ':tat': advanceTat(undefined, count, now, limits) },
        };
    // This write's own mark, and whether the object was scheduled before it: should the
    // SDK try it again after a first try that applied but whose answer was lost, the
    // mark refuses the second (no slots reserved twice) and tells the write was ours.
    const token = randomBytes(9).toString('base64url');
    try {
      const result = await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression:
            `SET ${rate.set}, #scheduled = :true, #reserved_at = :now, #tenant = :tenant, #resource = :resource, ` +
            '#sched_shard = :shard, #sched_key = :pk, #scheduled_at = if_not_exists(#scheduled_at, :now), ' +
            '#scheduled_retention_ms = if_not_exists(#scheduled_retention_ms, :retention_ms), ' +
            `#cursor = if_not_exists(#cursor, :zero), #seq = if_not_exists(#seq, :zero), #fence = if_not_exists(#fence, :zero)${keep.set}, ` +
            '#reserve_token = :token, #reserve_was_scheduled = if_not_exists(#scheduled, :false) ' +
            'ADD #depth :count, #last_slot :count',
          ConditionExpression: `${rate.condition}${keep.condition} AND (attribute_not_exists(#reserve_token) OR #reserve_token <> :token)`,
          ExpressionAttributeNames: names(
            'tat',
            'scheduled',
            'reserved_at',
            'tenant',
            'resource',
            'sched_shard',
            'sched_key',
            'scheduled_at',
            'scheduled_retention_ms',
            'cursor',
            'seq',
            'fence',
            'depth',
            'last_slot',
            'reserve_token',
            'reserve_was_scheduled',
            ...keep.names,
          ),
          ExpressionAttributeValues: {
            ...rate.values,
            ...keep.values,
            ':token': token,
            ':retention_ms': this.#retentionMs,
            ':false': false,
            ':shard': scheduleShard(key, SCHEDULE_SHARDS),
            ':pk': objectPk(key),
            ':true': true,
            ':now': now,
            ':tenant': key.tenantId,
            ':resource': key.resource,
            ':zero': 0,
            ':count': count,
            ':room': limits.cap - count,
          },
          // The whole item as it was (no more capacity than the update itself): a quiet
          // event's doorbell carries what its turn would otherwise read.
          ReturnValues: 'ALL_OLD',
        }),
      );
      const old = toMeta(result.Attributes ?? {});
      return {
        firstSlot: old.lastSlot + 1,
        inlined: inline !== undefined,
        flipped: !old.scheduled,
        depth: old.depth + count,
        tat: busy ? Number(old.tat) + count * interval : advanceTat(undefined, count, now, limits),
        ...(stored && quietTurnAllowed(old, now) && { quiet: { cursor: old.cursor, seq: old.seq, stored } }),
      };
    } catch (error) {
      // Refused on the SDK's second try or later: the first may have applied unanswered.
      if (refusedOnRetry(error)) return this.#ownReservation(key, token, count, inline?.id);
      if (isConditionFailure(error)) return undefined;
      // Any other error may follow a try that applied: its answer lost, the SDK's later
      // tries throttled or failed (or a 500 after the write). An event kept inline is then
      // stored and will be delivered, and reserved slots would hold the object up for the
      // ingest grace: the write is taken as made if the meta item says so.
      const own = await this.#ownReservation(key, token, count, inline?.id).catch(() => undefined);
      if (own) return own;
      throw error;
    }
  }

  /**
   * The reservation a write with `token` made, if it is the last one on the meta item
   * (no other reservation came since: its slots are the last `count`); or, for an event
   * kept inline, if the meta item still keeps it (then at cursor + 1; rung in case this
   * write flipped the object, which a later reservation's mark hides).
   */
  async #ownReservation(key: ObjectKey, token: string, count: number, inlineId: string | undefined): Promise<Reservation | undefined> {
    const item = await this.#metaItem(key);
    if (!item) return undefined;
    const meta = toMeta(item);
    if (item.reserve_token === token) {
      return {
        firstSlot: meta.lastSlot - count + 1,
        inlined: inlineId !== undefined,
        flipped: item.reserve_was_scheduled === false,
        depth: meta.depth,
        tat: meta.tat ?? 0,
      };
    }
    if (inlineId === undefined || (item.inline as { id?: unknown } | undefined)?.id !== inlineId) return undefined;
    return { firstSlot: meta.cursor + 1, inlined: true, flipped: true, depth: meta.depth, tat: meta.tat ?? 0 };
  }

  /** The inline event of a doorbell's snapshot, as the meta item would give it: at slot cursor + 1. */
  snapshotEvent(snapshot: QuietSnapshot, now: number): PendingItem {
    return toPending({ ...snapshot.stored, slot: snapshot.cursor + 1 }, now);
  }

  /** Writes the events of a reservation, one item per slot. */
  async writeEvents(key: ObjectKey, events: readonly AcceptedEvent[], reservedAt: number): Promise<void> {
    await this.writeEventsOf([{ key, events, reservedAt }]);
  }

  /** Writes the events of several objects' reservations (one request's) together: one batched write per 25 items. */
  async writeEventsOf(
    reservations: ReadonlyArray<{ readonly key: ObjectKey; readonly events: readonly AcceptedEvent[]; readonly reservedAt: number }>,
  ): Promise<void> {
    await batchWrite(
      this.#client,
      this.#table,
      reservations.flatMap(({ key, events, reservedAt }) => {
        const pk = objectPk(key);
        return events.map((event) => ({
          PutRequest: { Item: { pk, sk: slotSk(event.slot), slot: event.slot, ...eventAttributes(event, reservedAt, this.#retentionMs) } },
        }));
      }),
    );
  }

  /**
   * Marks reserved slots whose events could not be written, so the distributor
   * skips them at once instead of waiting out the ingest grace period. A slot whose
   * event was written after all (its batch succeeded, or landed late) is left as it
   * is, never voided: the distributor may have published it already. Answers the
   * slots that were found written.
   */
  async voidSlots(key: ObjectKey, slots: readonly number[], reservedAt: number): Promise<Set<number>> {
    const written = new Set<number>();
    await Promise.all(
      slots.map(async (slot) => {
        const voided = await applied(
          this.#client.send(
            new PutCommand({
              TableName: this.#table,
              Item: this.#voidItem(key, slot, reservedAt),
              ConditionExpression: 'attribute_not_exists(#pk)',
              ExpressionAttributeNames: names('pk'),
            }),
          ),
        );
        // Refused: an item is there, but it may be a void, not the event: this void's own
        // first try that applied unanswered (the SDK's second try is then refused), or
        // another's. Taken for written, an event never stored would be answered accepted.
        if (!voided && !(await this.#isVoid(key, slot))) written.add(slot);
      }),
    );
    return written;
  }

  /**
   * The slots from `first` to `last` whose event is written (strongly consistent): for
   * an ingest whose write failed, once none of its batches can still write.
   */
  async writtenSlots(key: ObjectKey, first: number, last: number): Promise<Set<number>> {
    const written = new Set<number>();
    const pages = queryPages(this.#client, {
      TableName: this.#table,
      KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
      ExpressionAttributeNames: names('pk', 'sk', 'slot', 'void'),
      ExpressionAttributeValues: { ':pk': objectPk(key), ':from': slotSk(first), ':to': slotSk(last) },
      ProjectionExpression: '#slot, #void',
      ConsistentRead: true,
    });
    for await (const result of pages) {
      for (const item of result.Items ?? []) if (item.void !== true) written.add(Number(item.slot));
    }
    return written;
  }

  /**
   * Voids a reserved slot whether or not its event was written: the event is withdrawn.
   * Only for a slot behind one of its own request's slots that is still empty, so the
   * distributor cannot have reached it (it waits at the empty slot, for up to the
   * ingest grace).
   */
  async withdrawSlot(key: ObjectKey, slot: number, reservedAt: number): Promise<void> {
    await this.#client.send(new PutCommand({ TableName: this.#table, Item: this.#voidItem(key, slot, reservedAt) }));
  }

  #voidItem(key: ObjectKey, slot: number, reservedAt: number): Record<string, unknown> {
    const expiresAt = epochSeconds(reservedAt + this.#retentionMs);
    return { pk: objectPk(key), sk: slotSk(slot), slot, void: true, reserved_at: reservedAt, expires_at: expiresAt };
  }

  /** Whether a slot's item is a void (strongly consistent). */
  async #isVoid(key: ObjectKey, slot: number): Promise<boolean> {
    const result = await this.#client.send(
      new GetCommand({
        TableName: this.#table,
        Key: slotItemKey(key, slot),
        ConsistentRead: true,
        ProjectionExpression: '#void',
        ExpressionAttributeNames: names('void'),
      }),
    );
    return result.Item?.void === true;
  }

  /**
   * Settles the slot of an event whose ingest is gone (its idempotency key was left
   * pending past the ingest grace): voids the slot unless its item exists, so the event
   * can no longer be stored there, and says whether it was. A void found there (its
   * ingest's write failed, or another retry voided it first) is an event not stored.
   */
  async settleSlot(key: ObjectKey, slot: number, reservedAt: number): Promise<'stored' | 'unstored'> {
    const found = await this.voidSlots(key, [slot], reservedAt);
    return found.has(slot) ? 'stored' : 'unstored';
  }

  /** The meta item, strongly consistent; `now` judges the expiry of an inline event. */
  async readMeta(key: ObjectKey, now?: number): Promise<QueueMeta | undefined> {
    const item = await this.#metaItem(key);
    return item ? toMeta(item, now) : undefined;
  }

  /** The meta item as stored, strongly consistent. */
  async #metaItem(key: ObjectKey): Promise<Record<string, unknown> | undefined> {
    const result = await this.#client.send(
      new GetCommand({ TableName: this.#table, Key: { pk: objectPk(key), sk: META_SK }, ConsistentRead: true }),
    );
    return result.Item;
  }

  /**
   * Takes the object's lease. The condition admits one holder at a time and lets a
   * new holder in once the old lease has expired (a crashed holder blocks nobody
   * for longer). The fence goes up by one on every take: each later write of the
   * holder checks it, so a holder that lost the lease cannot change anything.
   */
  async acquireLease(key: ObjectKey, owner: string, now: number, leaseMs: number): Promise<QueueMeta> {
    try {
      const result = await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression: 'SET #lease_owner = :owner, #lease_until = :until, #turn_at = :now ADD #fence :one',
          ConditionExpression: 'attribute_exists(#pk) AND (attribute_not_exists(#lease_until) OR #lease_until <= :now)',
          ExpressionAttributeNames: names('lease_owner', 'lease_until', 'turn_at', 'fence', 'pk'),
          ExpressionAttributeValues: { ':owner': owner, ':until': now + leaseMs, ':one': 1, ':now': now },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return toMeta(result.Attributes ?? {}, now);
    } catch (error) {
      // Refused on a later try: the first may have applied, its answer lost, and the lease
      // refusing the retry is this holder's own. Taken for another's, the doorbell would be
      // acknowledged with nobody to drain the object or ring it again until the reconciler
      // found it stuck, minutes on. A lease with this owner and expiry is this take's: no
      // other take sets them, and none can come while it is live.
      if (refusedOnRetry(error)) {
        const item = await this.#metaItem(key);
        if (item?.lease_owner === owner && Number(item.lease_until) === now + leaseMs) return toMeta(item, now);
      }
      if (isConditionFailure(error)) throw new LeaseHeldError();
      throw error;
    }
  }

  /** Reads up to `limit` slot items after `afterSlot`, in slot order. */
  async readPending(key: ObjectKey, afterSlot: number, limit: number, now: number): Promise<{ items: PendingItem[]; readAll: boolean }> {
    const result = await this.#client.send(
      new QueryCommand({
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
        ExpressionAttributeNames: names('pk', 'sk'),
        ExpressionAttributeValues: {
          ':pk': objectPk(key),
          ':from': slotSk(afterSlot + 1),
          ':to': SLOT_PREFIX + '9'.repeat(SLOT_DIGITS),
        },
        ConsistentRead: true,
        Limit: limit,
      }),
    );
    return { items: (result.Items ?? []).map((item) => toPending(item, now)), readAll: result.LastEvaluatedKey === undefined };
  }

  /**
   * The events of a chunk a crashed holder committed, for publishing it again, with
   * expiry judged when the chunk was planned (so the same ones are taken again).
   */
  async readTurn(key: ObjectKey, turn: TurnRecord): Promise<PendingItem[]> {
    const inline = turn.inline ? [toPending({ ...turn.inline, slot: turn.fromSlot }, turn.plannedAt)] : [];
    const firstSlot = turn.inline ? turn.fromSlot + 1 : turn.fromSlot;
    return [...inline, ...(await this.#readSlots(key, firstSlot, turn.toSlot, turn.plannedAt))];
  }

  async #readSlots(key: ObjectKey, fromSlot: number, toSlot: number, now: number | undefined): Promise<PendingItem[]> {
    // An empty range (DynamoDB refuses a BETWEEN whose bounds are reversed).
    if (fromSlot > toSlot) return [];
    const items: PendingItem[] = [];
    const pages = queryPages(this.#client, {
      TableName: this.#table,
      KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
      ExpressionAttributeNames: names('pk', 'sk'),
      ExpressionAttributeValues: { ':pk': objectPk(key), ':from': slotSk(fromSlot), ':to': slotSk(toSlot) },
      ConsistentRead: true,
    });
    for await (const result of pages) items.push(...(result.Items ?? []).map((item) => toPending(item, now)));
    return items;
  }

  /**
   * Commits a chunk before it is published: advances the cursor and seq and
   * records the chunk, so a holder that crashes while publishing leaves enough for
   * the next holder to publish the same events with the same seqs. The fence makes
   * a fenced-out holder's commit fail; the cursor check makes a commit apply once.
   */
  async commitChunk(
    key: ObjectKey,
    fence: number,
    previousCursor: number,
    next: {
      cursor: number;
      seq: number;
      consumed: number;
      /** The chunk to publish again if this holder dies; none for a chunk with nothing to publish (a dropped one). */
      turn: TurnRecord | undefined;
      dropped?: { count: number; parents: readonly string[] };
      /** The meta item's inline event, which this chunk consumes: removed here, and kept in the turn record. */
      inline?: PendingItem;
      /** The earliest the slots after the chunk can have been reserved, when known (QueueMeta.floorAt). */
      floorAt?: number | undefined;
    },
  ): Promise<void> {
    // Events a drop switch discards are counted in the same write that consumes them.
    const dropped = next.dropped && next.dropped.count > 0 ? next.dropped : undefined;
    const parents = dropped && dropped.parents.length > 0 ? dropped.parents : undefined;
    const turn = next.turn && next.inline ? { ...next.turn, inline: inlineRecord(next.inline, this.#retentionMs) } : next.turn;
    const removed = [...(turn ? [] : ['#turn']), ...(next.inline ? ['#inline'] : [])];
    const floor = next.floorAt !== undefined;
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression:
            `SET #cursor = :cursor, #seq = :seq${turn ? ', #turn = :turn' : ''}${floor ? ', #floor_at = :floor_at' : ''} ADD #depth :consumed` +
            (dropped ? ', #switch_dropped :dropped' : '') +
            (parents ? ', #switch_dropped_parents :parents' : '') +
            (removed.length > 0 ? ` REMOVE ${removed.join(', ')}` : ''),
          ConditionExpression: '#fence = :fence AND #cursor = :previous',
          ExpressionAttributeNames: names(
            'cursor',
            'seq',
            'turn',
            'depth',
            'fence',
            ...(dropped ? ['switch_dropped'] : []),
            ...(parents ? ['switch_dropped_parents'] : []),
            ...(next.inline ? ['inline'] : []),
            ...(floor ? ['floor_at'] : []),
          ),
          ExpressionAttributeValues: {
            ':cursor': next.cursor,
            ':seq': next.seq,
            ...(turn && { ':turn': turn }),
            ...(floor && { ':floor_at': next.floorAt }),
            ':consumed': -next.consumed,
            ':fence': fence,
            ':previous': previousCursor,
            ...(dropped && { ':dropped': dropped.count }),
            ...(parents && { ':parents': new Set(parents) }),
          },
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      // Refused on a later try: the first may have applied, its answer lost. Under a live
      // lease only its holder moves the cursor, so a cursor where this commit put it, under
      // this fence, is this commit's: the holder goes on and publishes the chunk, rather
      // than leave it committed and unpublished until the reconciler finds the object.
      if (refusedOnRetry(error)) {
        const meta = await this.readMeta(key);
        if (meta?.fence === fence && meta.cursor === next.cursor) return;
      }
      throw new FencedOutError();
    }
  }

  /**
   * Commits a turn's last chunk, already published, and ends the turn in the same
   * write: idle when nothing else is pending, otherwise still scheduled (the
   * caller rings again). No turn record is kept: a holder that dies before this
   * write leaves the chunk uncommitted, and the next holder publishes the same
   * events with the same seqs and delivery ids again (at least once).
   *
   * With `keepLease`, a holder with time left goes on instead when events came
   * meanwhile: the chunk is committed, the lease stays, and the answer is the meta
   * item as that write left it (`held`), to plan the next chunk from.
   */
  async commitLastChunk(
    key: ObjectKey,
    fence: number,
    previousCursor: number,
    next: Omit<ChunkCommit, 'previousCursor'>,
    now: number,
    options: { keepLease?: boolean } = {},
  ): Promise<TurnEnd | StillHeld> {
    const commit = { previousCursor, ...next };
    const forms = this.#endForms({ fence }, now, commit);
    if (!options.keepLease) return this.#endTurn(key, { fence }, now, commit, [forms.idle, forms.pending], endedAs);
    // A lease still on the item under this holder's fence is this holder's, kept.
    const heldAs = (meta: QueueMeta): TurnEnd | StillHeld => (meta.leaseUntil !== undefined ? { held: meta } : endedAs(meta));
    return this.#endTurn<TurnEnd | StillHeld>(key, { fence }, now, commit, [forms.idle, forms.held], heldAs);
  }

  /**
   * Ends a quiet turn, which took no lease: commits the inline event at cursor + 1,
   * already published, and ends the turn, on the condition that the cursor is where
   * it was read and nobody holds the lease. If another holder got there first the
   * condition fails (FencedOutError); it published the same event with the same seq.
   */
  async commitQuiet(key: ObjectKey, previousCursor: number, seq: number, now: number): Promise<TurnEnd> {
    const guard = { unleasedAt: now };
    const commit = { previousCursor, cursor: previousCursor + 1, seq, consumed: 1, removeInline: true };
    const forms = this.#endForms(guard, now, commit);
    return this.#endTurn(key, guard, now, commit, [forms.idle, forms.pending], endedAs);
  }

  /**
   * Ends a turn. If nothing is left (depth 0) the object goes idle in the same
   * write, so an ingest that reserves right after sees scheduled = false and rings.
   * If an ingest reserved in the meantime the condition fails, and the caller must
   * ring again: the answer is 'pending'. A turn that leaves the object `paused` notes
   * when on the meta item, in the same write (see QueueMeta.pausedAt). A turn that
   * knows events are left (`left`) releases the lease without trying for idle.
   */
  async finishTurn(key: ObjectKey, fence: number, now: number, options: { paused?: boolean; left?: boolean } = {}): Promise<TurnEnd> {
    const forms = this.#endForms({ fence }, now, undefined, options.paused === true);
    return this.#endTurn(key, { fence }, now, undefined, options.left ? [forms.pending] : [forms.idle, forms.pending], endedAs);
  }

  /**
   * The ways a turn's last write may go, committing its last chunk too when one is
   * given: `idle` (off the `by_schedule` index) when that leaves nothing pending;
   * `pending`, still scheduled with the lease released (the caller rings again), or
   * `held`, the chunk committed and the lease kept (the caller goes on).
   */
  #endForms(guard: TurnGuard, now: number, commit?: ChunkCommit, paused = false) {
    const commitSet = commit ? '#cursor = :cursor, #seq = :seq, ' : '';
    const commitAdd = commit ? ' ADD #depth :consumed' : '';
    const commitCondition = commit ? ' AND #cursor = :previous' : '';
    const commitRemove = commit?.removeInline ? ', #inline' : '';
    const commitNames = commit ? ['cursor', 'seq', ...(commit.removeInline ? ['inline'] : [])] : [];
    // A turn that goes on (pending, held) leaves the next one its floor (QueueMeta.floorAt);
    // idle, nothing is pending, and the next reservation's `scheduled_at` bounds what comes.
    const floor =
      commit?.floorAt !== undefined
        ? { set: '#floor_at = :floor_at, ', names: ['floor_at'], values: { ':floor_at': commit.floorAt } }
        : { set: '', names: [], values: {} };
    // A holder's writes check its fence; a quiet turn's, that no lease is held.
    const guardCondition = 'fence' in guard ? '#fence = :fence' : '(attribute_not_exists(#lease_until) OR #lease_until <= :now)';
    const guardNames = 'fence' in guard ? ['fence'] : ['lease_until'];
    const values: Record<string, unknown> = {
      ...('fence' in guard ? { ':fence': guard.fence } : { ':now': guard.unleasedAt }),
      ...(commit && { ':cursor': commit.cursor, ':seq': commit.seq, ':consumed': -commit.consumed, ':previous': commit.previousCursor }),
    };
    const idle: EndForm<TurnEnd> = {
      // The object stays listed in `by_schedule` (see unlistIdle): no index write per quiet event.
      update: `SET ${commitSet}#scheduled = :false${commitAdd} REMOVE #lease_owner, #lease_until, #turn, #scheduled_at, #scheduled_retention_ms, #floor_at, #paused_at, #rerung${commitRemove}`,
      condition: `${guardCondition}${commitCondition} AND #depth <= :pending`,
      names: [
        ...commitNames,
        'scheduled',
        'depth',
        'lease_owner',
        'lease_until',
        'turn',
        'scheduled_at',
        'scheduled_retention_ms',
        'floor_at',
        'paused_at',
        'rerung',
        ...guardNames,
      ],
      values: { ...values, ':false': false, ':pending': commit?.consumed ?? 0 },
      answer: () => 'idle',
    };
    const pending: EndForm<TurnEnd> = {
      update: paused
        ? `SET ${commitSet}${floor.set}#turn_at = :now, #paused_at = :now${commitAdd} REMOVE #lease_owner, #lease_until, #turn${commitRemove}`
        : `SET ${commitSet}${floor.set}#turn_at = :now${commitAdd} REMOVE #lease_owner, #lease_until, #turn, #paused_at${commitRemove}`,
      condition: `${guardCondition}${commitCondition}`,
      names: [
        ...commitNames,
        ...(commit ? ['depth'] : []),
        'turn_at',
        'lease_owner',
        'lease_until',
        'turn',
        'paused_at',
        ...floor.names,
        ...guardNames,
      ],
      values: { ...values, ...floor.values, ':now': now },
      answer: () => 'pending',
    };
    const held: EndForm<StillHeld> = {
      update: `SET ${floor.set}#cursor = :cursor, #seq = :seq${commitAdd} REMOVE #turn${commitRemove}`,
      condition: `${guardCondition}${commitCondition}`,
      names: [...commitNames, 'depth', 'turn', ...floor.names, ...guardNames],
      values: { ...values, ...floor.values },
      returnsItem: true,
      answer: (item) => ({ held: toMeta(item ?? {}, now) }),
    };
    return { idle, pending, held };
  }

  /**
   * Ends a turn with the first of `forms` whose condition holds. Fenced out when none
   * does because another holder has taken over.
   */
  async #endTurn<R>(
    key: ObjectKey,
    guard: TurnGuard,
    now: number,
    commit: ChunkCommit | undefined,
    forms: readonly EndForm<R>[],
    ourState: (meta: QueueMeta) => R,
  ): Promise<R> {
    for (const form of forms) {
      try {
        const result = await this.#client.send(
          new UpdateCommand({
            TableName: this.#table,
            Key: { pk: objectPk(key), sk: META_SK },
            UpdateExpression: form.update,
            ConditionExpression: form.condition,
            ExpressionAttributeNames: names(...form.names),
            ExpressionAttributeValues: form.values,
            ...(form.returnsItem && { ReturnValues: 'ALL_NEW' as const }),
          }),
        );
        return form.answer(result.Attributes);
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
        // Refused on a later try: a first try that applied, its answer lost, moved the
        // cursor. Its state is the object's now (`ourState`): left pending, the caller must
        // ring again (nobody else will), rather than take it for a fenced-out holder's refusal.
        if (commit && refusedOnRetry(error)) {
          const meta = await this.readMeta(key, now);
          const ours = meta !== undefined && meta.cursor === commit.cursor && (!('fence' in guard) || meta.fence === guard.fence);
          if (ours) return ourState(meta);
        }
      }
    }
    throw new FencedOutError();
  }

  /**
   * The objects listed in one shard of the `by_schedule` index (eventually consistent), a
   * page at a time (of at most `pageSize`, or what one query reads), each saying whether
   * more follow: for a reader that must stop on time (`GET /v1/admin/queues`), where the
   * shard may list hundreds of thousands. It reads the next page only when asked for it.
   * With `tenantId`, only that tenant's objects, and only they are read: the index's sort
   * key is the object's partition key, which starts with its tenant's id.
   */
  async *listedPages(shard: number, pageSize?: number, tenantId?: string): AsyncGenerator<{ keys: ObjectKey[]; more: boolean }> {
    const pages = queryPages(this.#client, {
      TableName: this.#table,
      IndexName: SCHEDULE_INDEX,
      KeyConditionExpression: `#sched_shard = :shard${tenantId === undefined ? '' : ' AND begins_with(#sched_key, :tenant)'}`,
      ExpressionAttributeNames: names('sched_shard', ...(tenantId === undefined ? [] : ['sched_key'])),
      ExpressionAttributeValues: {
        ':shard': scheduleShardKey(shard),
        // The '#' that ends a tenant's id in the key: `ten_a` is no prefix of `ten_ab#…`'s objects.
        ...(tenantId !== undefined && { ':tenant': objectPk({ tenantId, resource: '' }) }),
      },
      ...(pageSize !== undefined && { Limit: pageSize }),
    });
    for await (const result of pages) {
      yield { keys: (result.Items ?? []).map((item) => parseObjectPk(String(item.pk))), more: result.LastEvaluatedKey !== undefined };
    }
  }

  /**
   * The objects listed in the `by_schedule` index (eventually consistent): every
   * scheduled object, and idle ones the reconciler has not unlisted yet; of the given
   * shards only (0 to SCHEDULE_SHARDS - 1), or of all.
   */
  async scheduledObjects(shards: readonly number[] = ALL_SHARDS): Promise<ObjectKey[]> {
    const keys: ObjectKey[] = [];
    for (const shard of shards) for await (const page of this.listedPages(shard)) keys.push(...page.keys);
    return keys;
  }

  /**
   * Reads many meta items, 100 per request and up to READ_METAS_AT_ONCE requests at a
   * time (the reconciler reads every listed object each run): strongly consistent unless
   * `consistent` is false, for half the read units where an answer up to a second old
   * does no harm.
   */
  async readMetas(
    keys: readonly ObjectKey[],
    options: { consistent?: boolean; complete?: boolean; onUnread?: (count: number) => void } = {},
  ): Promise<Array<{ key: ObjectKey; meta: QueueMeta }>> {
    const found: Array<{ key: ObjectKey; meta: QueueMeta }> = [];
    let unread = 0;
    const batches: ObjectKey[][] = [];
    for (let i = 0; i < keys.length; i += METAS_PER_READ) batches.push(keys.slice(i, i + METAS_PER_READ));
    const readBatch = async (batch: readonly ObjectKey[]) => {
      let request: Record<string, unknown>[] = batch.map((k) => ({ pk: objectPk(k), sk: META_SK }));
      for (let attempt = 0; request.length > 0 && attempt < 6; attempt++) {
        if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 20 * 2 ** attempt));
        const result = await this.#client.send(
          new BatchGetCommand({ RequestItems: { [this.#table]: { Keys: request, ConsistentRead: options.consistent ?? true } } }),
        );
        for (const item of result.Responses?.[this.#table] ?? []) found.push({ key: parseObjectPk(String(item.pk)), meta: toMeta(item) });
        request = (result.UnprocessedKeys?.[this.#table]?.Keys as Record<string, unknown>[] | undefined) ?? [];
      }
      unread += request.length;
    };
    await eachAtOnce(batches, READ_METAS_AT_ONCE, readBatch);
    // What DynamoDB still left unread (throttled) is left out, and counted to `onUnread`; a
    // caller that must see every object (a lift ringing them) asks for `complete`, and fails
    // rather than miss some.
    if (options.complete && unread > 0) throw new Error(`DynamoDB left ${unread} of ${keys.length} objects unread; try again`);
    if (unread > 0) options.onUnread?.(unread);
    return found;
  }

  /** When the oldest event still waiting was accepted (epoch ms), if any. */
  async oldestPendingAt(key: ObjectKey, meta: Pick<QueueMeta, 'cursor' | 'inline'>): Promise<number | undefined> {
    const oldest = meta.inline ?? (await this.readPending(key, meta.cursor, 1, Date.now())).items[0];
    const created = oldest?.createdAt;
    return created ? Date.parse(created) : oldest?.reservedAt;
  }

  /**
   * Takes an idle object off the `by_schedule` index, if it is still idle, no
   * reservation came since the one that was seen, and no drop count awaits its marker. An object stays listed while it
   * is active, so a quiet object's events do not each add and remove an index entry
   * (two index writes); the next reservation lists it again.
   */
  async unlistIdle(key: ObjectKey, reservedAt: number): Promise<boolean> {
    return applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression: 'REMOVE #sched_shard, #sched_key',
          // Dropped events still owed a gap marker keep the object listed until it goes out.
          ConditionExpression:
            '#scheduled = :false AND #reserved_at = :seen AND (attribute_not_exists(#switch_dropped) OR #switch_dropped = :zero)',
          ExpressionAttributeNames: names('sched_shard', 'sched_key', 'scheduled', 'reserved_at', 'switch_dropped'),
          ExpressionAttributeValues: { ':false': false, ':seen': reservedAt, ':zero': 0 },
        }),
      ),
    );
  }

  /**
   * After the reconciler rang an object a turn had left paused (see QueueMeta.pausedAt):
   * counts its time without a turn from now, if no turn came since the one seen, so that
   * a lost ring is found stuck again at the usual spacings, not at every sweep.
   */
  async restartStuckClock(key: ObjectKey, pausedAt: number, now: number): Promise<boolean> {
    return applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression: 'SET #turn_at = :now REMOVE #paused_at',
          ConditionExpression: '#paused_at = :seen',
          ExpressionAttributeNames: names('turn_at', 'paused_at'),
          ExpressionAttributeValues: { ':now': now, ':seen': pausedAt },
        }),
      ),
    );
  }

  /**
   * Notes the re-ring the reconciler just sent a stuck object (QueueMeta.rerung), while
   * it is still scheduled: the next run then sends the next one at its spacing, and a
   * ring a run had no time for is still owed to the next run, however late it comes.
   */
  async noteRerung(key: ObjectKey, rerung: string): Promise<boolean> {
    return applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression: 'SET #rerung = :rerung',
          ConditionExpression: '#scheduled = :true',
          ExpressionAttributeNames: names('rerung', 'scheduled'),
          ExpressionAttributeValues: { ':rerung': rerung, ':true': true },
        }),
      ),
    );
  }

  /**
   * Adds to the object's counts of events refused for its rate or its queue cap (SPEC §2:
   * the object's reject counters). On an item of their own beside the meta item, not on
   * it: the meta item is written twice for every event, billed by its size in 1 KB steps.
   * Kept for the retention period after the last refusal counted.
   */
  async noteRejected(key: ObjectKey, counts: Readonly<Partial<Record<RejectReason, number>>>, now: number): Promise<void> {
    await this.#client.send(
      new UpdateCommand({
        TableName: this.#table,
        Key: { pk: objectPk(key), sk: REJECTED_SK },
        UpdateExpression: 'ADD #rate_limited :rate, #queue_full :full SET #last_at = :at, #expires_at = :expires',
        ExpressionAttributeNames: names('rate_limited', 'queue_full', 'last_at', 'expires_at'),
        ExpressionAttributeValues: {
          ':rate': counts.rate_limited ?? 0,
          ':full': counts.queue_full ?? 0,
          ':at': new Date(now).toISOString(),
          ':expires': epochSeconds(now + this.#retentionMs),
        },
      }),
    );
  }

  /** The object's counts of refused events (see noteRejected); undefined when none are kept. */
  async rejectedCounts(key: ObjectKey, now: number): Promise<RejectedCounts | undefined> {
    const { Item } = await this.#client.send(new GetCommand({ TableName: this.#table, Key: { pk: objectPk(key), sk: REJECTED_SK } }));
    // DynamoDB's TTL deletes late.
    if (!Item || Number(Item.expires_at ?? 0) * 1000 <= now) return undefined;
    return { rate_limited: Number(Item.rate_limited ?? 0), queue_full: Number(Item.queue_full ?? 0), last_at: String(Item.last_at) };
  }

  /**
   * Notes what a reconciler run found in the `by_schedule` shards it read, and answers
   * what the runs noted for every shard (each with when it was noted): one item, so that
   * runs that read only some shards of a large index still report the whole of it.
   */
  async noteShardSummaries(read: ReadonlyMap<number, Omit<ShardSummary, 'at'>>, now: number): Promise<Map<number, ShardSummary>> {
    if (read.size === 0) return new Map();
    const values: Record<string, unknown> = {};
    const attributeNames: Record<string, string> = {};
    for (const [shard, summary] of read) {
      attributeNames[`#s${shard}`] = `shard_${shard}`;
      const deepest = summary.deepest.slice(0, SHARD_DEEPEST).map(({ key, depth }) => [objectPk(key), depth]);
      values[`:s${shard}`] = { ...summary, deepest, at: now };
    }
    const { Attributes } = await this.#client.send(
      new UpdateCommand({
        TableName: this.#table,
        Key: SHARD_SUMMARIES_KEY,
        UpdateExpression: `SET ${Object.keys(attributeNames)
          .map((name) => `${name} = :${name.slice(1)}`)
          .join(', ')}`,
        ExpressionAttributeNames: attributeNames,
        ExpressionAttributeValues: values,
        ReturnValues: 'ALL_NEW',
      }),
    );
    return toShardSummaries(Attributes);
  }

  /** What the reconciler's runs noted for every shard (see noteShardSummaries): one read, eventually consistent. */
  async shardSummaries(): Promise<Map<number, ShardSummary>> {
    const { Item } = await this.#client.send(new GetCommand({ TableName: this.#table, Key: SHARD_SUMMARIES_KEY }));
    return toShardSummaries(Item);
  }

  /** Removes a lease that expired long ago, if it is still the one that was seen. */
  async clearStaleLease(key: ObjectKey, leaseUntil: number): Promise<boolean> {
    return applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression: 'REMOVE #lease_owner, #lease_until',
          ConditionExpression: '#lease_until = :seen',
          ExpressionAttributeNames: names('lease_owner', 'lease_until'),
          ExpressionAttributeValues: { ':seen': leaseUntil },
        }),
      ),
    );
  }

  /**
   * Takes back the drop count a gap marker now stands for (only the lease holder may).
   * The count must still be the one the marker stands for: only the holder adds to it,
   * so it is, unless the SDK tried this write again after a first try that applied but
   * whose answer was lost. Without that condition the second try would take the count
   * back twice, below zero, and the next drops' marker would stand for too few events
   * (or, the count still at or below zero, never go out).
   */
  async clearSwitchDropped(key: ObjectKey, fence: number, count: number): Promise<void> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: objectPk(key), sk: META_SK },
          UpdateExpression: 'ADD #switch_dropped :minus REMOVE #switch_dropped_parents',
          ConditionExpression: '#fence = :fence AND #switch_dropped = :count',
          ExpressionAttributeNames: names('switch_dropped', 'switch_dropped_parents', 'fence'),
          ExpressionAttributeValues: { ':minus': -count, ':fence': fence, ':count': count },
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      // Refused on a later try: the first one applied if the count is gone under our fence.
      if (refusedOnRetry(error)) {
        const meta = await this.readMeta(key);
        if (meta?.fence === fence && meta.switchDropped === 0) return;
      }
      throw new FencedOutError();
    }
  }
}
