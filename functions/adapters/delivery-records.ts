/**
 * What the delivery stage keeps in the control table, each under its webhook and
 * with the retention period as TTL (reads check expiry too):
 *
 * - attempts (`GET /v1/webhooks/{id}/attempts`), newest first;
 * - the delivery log: each delivery's events, for replay;
 * - held deliveries of a quarantined or disabled endpoint, in release order
 *   (per resource, by seq), and per-resource counts of what overflowed the cap;
 * - dead letters: deliveries past the retry budget;
 * - each endpoint's pace: when its time is next free (the per-endpoint rate), and
 *   per-window send counters for the attempts a failing endpoint may have.
 */

import { randomUUID } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  type PutCommandInput,
  QueryCommand,
  type QueryCommandInput,
  type QueryCommandOutput,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { eventCount, type OverflowCount } from '../core/deliveries.ts';
import { paceSendAt } from '../core/endpoint-pace.ts';
import type { DeliveryMessage, GapMarker } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { sentAgain } from './aws.ts';
import { applied, appliedOwn, batchWrite, epochSeconds, isConditionFailure, names, queryPages } from './dynamo.ts';

export interface AttemptRecord {
  readonly id: string;
  readonly delivery_id: string;
  readonly attempt: number;
  readonly status_code: number | null;
  readonly duration_ms: number;
  readonly error: string | null;
  readonly at: string;
}

/** A dead letter as a page gives it: `replayedAt` when a replay's delivery wrote it (see `deadLetter`). */
export interface DeadLetter {
  readonly sk: string;
  readonly reason: string;
  readonly message: DeliveryMessage;
  readonly replayedAt: number | undefined;
}

export interface HeldDelivery {
  readonly sk: string;
  readonly message: DeliveryMessage;
}

const pad = (n: number, width = 15) => String(n).padStart(width, '0');
// The delivery function's role may reach only these partitions (TABLE_ACCESS.delivery).
const attemptsPk = (webhookId: string) => `${CONTROL_PK.attempts}${webhookId}`;
const logPk = (webhookId: string) => `${CONTROL_PK.deliveries}${webhookId}`;
const heldPk = (webhookId: string) => `${CONTROL_PK.held}${webhookId}`;
const overflowPk = (webhookId: string) => `${CONTROL_PK.overflow}${webhookId}`;
// Apart from the counts, which a release reads whole: which deliveries were counted (`countOverflowOnce`).
const countedPk = (webhookId: string) => `${CONTROL_PK.overflow}${webhookId}#counted`;
const deadPk = (webhookId: string) => `${CONTROL_PK.dead}${webhookId}`;
const ratePk = (webhookId: string, windowMs: number, window: number) => `${CONTROL_PK.rate}${webhookId}#${windowMs}#${window}`;
const pacePk = (webhookId: string) => `${CONTROL_PK.pace}${webhookId}`;

/** When a delivery's oldest event was accepted (epoch ms; 0 when none says). */
function acceptedAt(message: DeliveryMessage): number {
  const times = message.events.map((e) => Date.parse(e.created_at)).filter(Number.isFinite);
  return times.length > 0 ? Math.min(...times) : 0;
}

/** The seq of a delivery's first event that has one (a `sluice.gap` marker has none). */
function firstSeq(message: DeliveryMessage): number | undefined {
  return message.events.find((event) => 'seq' in event)?.seq;
}

interface Waiter<T> {
  readonly resolve: (answer: T) => void;
  readonly reject: (error: unknown) => void;
}

/** How long a take waits for the other records of its invocation to ask too. */
const TAKE_LINGER_MS = 3;

/**
 * The gap markers one release step sends at most: a webhook can owe one per resource
 * (tens of thousands, under a long drop or a held overflow), more than one step could
 * queue or one DynamoDB page (1 MB) would hold.
 */
export const OWED_GAPS_PER_STEP = 100;

/**
 * How long an overflow count outlives its last event: a drop or a disable may last
 * longer than the retention period, and its marker is owed at its end.
 */
const OVERFLOW_KEEP_MS = 366 * 86_400_000;

/**
 * Asks made under one key within TAKE_LINGER_MS (the records of one invocation) share
 * one `answer` for all of them, which answers each in the order they asked.
 */
function gathered<T>(groups: Map<string, Array<Waiter<T>>>, key: string, answer: (count: number) => Promise<T[]>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let group = groups.get(key);
    if (!group) {
      const waiters: Array<Waiter<T>> = [];
      group = waiters;
      groups.set(key, waiters);
      setTimeout(() => {
        groups.delete(key);
        answer(waiters.length).then(
          (answers) => {
            for (const [i, w] of waiters.entries()) w.resolve(answers[i] as T);
          },
          (error: unknown) => {
            for (const w of waiters) w.reject(error);
          },
        );
      }, TAKE_LINGER_MS);
    }
    group.push({ resolve, reject });
  });
}

/** A held item as a release reads it: its place in the release order and its delivery. */
function heldDelivery(item: Record<string, unknown>): HeldDelivery {
  return { sk: String(item.sk), message: JSON.parse(String(item.message)) as DeliveryMessage };
}

/** How long a container answers `paceFreeAt` and `paceGivenBack` from the endpoint's tat it last read. */
const PACE_SEEN_MS = 1_000;

export class DeliveryRecords {
  readonly #takes = new Map<string, Array<Waiter<boolean>>>();
  readonly #paces = new Map<string, Array<Waiter<number>>>();
  /** Endpoints whose time was last seen reserved beyond now, and until when: their next reservation tries the busy write first. */
  readonly #busyUntil = new Map<string, number>();
  /** Each endpoint's tat as this container last read it (`paceFreeAt`), and when (epoch ms). */
  readonly #paceSeen = new Map<string, { readonly at: number; readonly tat: Promise<number | undefined> }>();
  /** Per key, the last window this container saw taken by `takeOnce` (by itself or another). */
  readonly #takenWindows = new Map<string, number>();
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;
  readonly #retentionMs: number;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string; retentionDays: number }) {
    this.#client = options.client;
    this.#table = options.tableName;
    this.#retentionMs = options.retentionDays * 86_400_000;
  }

  #expiry(now: number) {
    return { expires_at: epochSeconds(now + this.#retentionMs), expires_at_ms: now + this.#retentionMs };
  }

  /** The pages of a query of this table (see `queryPages`). */
  #pages(input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>, more?: () => boolean): AsyncGenerator<QueryCommandOutput> {
    return queryPages(this.#client, { ...input, TableName: this.#table }, { ...(more && { more }) });
  }

  async recordAttempt(webhookId: string, record: AttemptRecord, now: number): Promise<void> {
    await this.#client.send(
      new PutCommand({
        TableName: this.#table,
        Item: { pk: attemptsPk(webhookId), sk: `${pad(now)}#${record.id}`, ...record, ...this.#expiry(now) },
      }),
    );
  }

  /**
   * The unexpired items of one partition (TTL deletes late, so reads check expiry),
   * optionally from a sort key on, newest first, at least `limit` of them (or all there
   * are; a caller keeps the first `limit`), and only the attributes `projection` names.
   * DynamoDB stops a query's page at 1 MB of items read, whatever its Limit: a partition
   * of large items (a delivery's logged events) gives fewer than `limit` a page, and the
   * pages after it are read until there are enough.
   */
  async #live(
    pk: string,
    now: number,
    options: { fromSk?: string; newestFirst?: boolean; limit?: number; projection?: readonly string[] } = {},
  ): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    const { limit, projection } = options;
    const pages = this.#pages(
      {
        KeyConditionExpression: options.fromSk === undefined ? '#pk = :pk' : '#pk = :pk AND #sk >= :from',
        FilterExpression: '#expires_at_ms > :now',
        ExpressionAttributeNames: names('pk', 'expires_at_ms', ...(options.fromSk === undefined ? [] : ['sk']), ...(projection ?? [])),
        ExpressionAttributeValues: { ':pk': pk, ':now': now, ...(options.fromSk !== undefined && { ':from': options.fromSk }) },
        ScanIndexForward: !options.newestFirst,
        ...(limit !== undefined && { Limit: limit }),
        ...(projection !== undefined && { ProjectionExpression: projection.map((name) => `#${name}`).join(', ') }),
      },
      () => limit === undefined || items.length < limit,
    );
    for await (const page of pages) items.push(...(page.Items ?? []));
    return items;
  }

  /**
   * The newest attempts first: later attempts have items of their own, and each
   * delivery's first attempt is kept on its log item.
   */
  async attempts(webhookId: string, limit: number, now: number): Promise<AttemptRecord[]> {
    // A log item also keeps its delivery's events (up to 256 KiB): only its first attempt is read out.
    const projection = ['sk', 'id', 'delivery_id', 'attempt', 'status_code', 'duration_ms', 'error', 'at'];
    const [later, first] = await Promise.all([
      this.#live(attemptsPk(webhookId), now, { newestFirst: true, limit }),
      this.#live(logPk(webhookId), now, { newestFirst: true, limit, projection }),
    ]);
    const items = [...later, ...first.filter((item) => item.attempt !== undefined)]
      .sort((a, b) => String(b.sk).localeCompare(String(a.sk)))
      .slice(0, limit);
    return items.map((item) => ({
      id: String(item.id),
      delivery_id: String(item.delivery_id),
      attempt: Number(item.attempt),
      status_code: item.status_code === null || item.status_code === undefined ? null : Number(item.status_code),
      duration_ms: Number(item.duration_ms),
      error: (item.error as string | null | undefined) ?? null,
      at: String(item.at),
    }));
  }

  /**
   * Logs a delivery's events, for replay, with its first attempt: one write. A
   * redelivered first attempt (SQS delivers at least once) is logged once per attempt time.
   */
  async logDelivery(message: DeliveryMessage, now: number, firstAttempt: AttemptRecord): Promise<void> {
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: {
            pk: logPk(message.webhookId),
            sk: `${pad(now)}#${message.deliveryId}`,
            ...firstAttempt,
            delivery_id: message.deliveryId,
            // Compressed: a delivery's events repeat most of their keys and values, and
            // DynamoDB bills this write (and the reads of the log) per KiB.
            events_z: deflateRawSync(JSON.stringify(message.events)),
            ...this.#expiry(now),
          },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  /**
   * The events of the deliveries logged from `since` up to (not at) `until`, oldest first, at
   * most `limit.deliveries` deliveries and `limit.bytes` of their events' JSON (the first
   * delivery is always taken); `more` tells when the window held more, and `nextAt` (epoch
   * ms) when the first one left out was logged. The log is read no further than that, so a
   * window of large deliveries costs the reader at most about `limit.bytes` of memory.
   */
  async logged(
    webhookId: string,
    window: { since: number; until: number },
    now: number,
    limit: { readonly deliveries: number; readonly bytes: number },
  ): Promise<{ deliveries: Array<DeliveryMessage['events']>; bytes: number; more: boolean; nextAt: number | undefined }> {
    // Nothing is logged before 1970, and a padded negative time no longer sorts by time
    // (a window there would be a reversed BETWEEN, which DynamoDB refuses).
    if (window.until <= 0) return { deliveries: [], bytes: 0, more: false, nextAt: undefined };
    const deliveries: Array<DeliveryMessage['events']> = [];
    let bytes = 0;
    let nextAt: number | undefined;
    const pages = this.#pages(
      {
        KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
        FilterExpression: '#expires_at_ms > :now',
        ExpressionAttributeNames: names('pk', 'sk', 'expires_at_ms'),
        // A replay up to now must send what was delivered a moment ago, which a replica
        // may not have yet (a replay is rare: its reads at twice the units).
        ConsistentRead: true,
        // Log keys are the padded time, then '#' and the delivery id: '~' sorts after all of them.
        ExpressionAttributeValues: {
          ':pk': logPk(webhookId),
          ':from': pad(Math.max(0, window.since)),
          ':to': `${pad(window.until - 1)}~`,
          ':now': now,
        },
      },
      () => nextAt === undefined,
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) {
        const text = loggedEventsText(item);
        const size = Buffer.byteLength(text);
        if (deliveries.length >= limit.deliveries || (deliveries.length > 0 && bytes + size > limit.bytes)) {
          nextAt = Number(String(item.sk).split('#')[0]);
          break;
        }
        deliveries.push(JSON.parse(text));
        bytes += size;
      }
      if (nextAt !== undefined) break;
    }
    return { deliveries, bytes, more: nextAt !== undefined, nextAt };
  }

  /**
   * Holds a delivery; the key orders release per resource by seq. False when it
   * was already held (SQS delivers at least once): the caller must not count it twice.
   */
  async hold(message: DeliveryMessage, now: number): Promise<boolean> {
    const first = message.events[0];
    const resource = first?.resource ?? '';
    const sk = await this.#heldSk(message, resource);
    return this.#putOnce({
      TableName: this.#table,
      Item: { pk: heldPk(message.webhookId), sk, message: JSON.stringify(message), ...this.#expiry(now) },
      ConditionExpression: 'attribute_not_exists(#pk)',
      ExpressionAttributeNames: names('pk'),
    });
  }

  /**
   * A put whose condition refuses an item written before (a delivery held, or
   * dead-lettered, by an earlier receive of its message): whether this call wrote it.
   * The item carries a token of this call's, so that a try the SDK sent again after the
   * first applied and lost its answer, refused by the first's item, is told from a
   * refusal by an earlier receive's: taken for one, the hold would give its place in the
   * held count back (the delivery held, uncounted: a release chain could end with it
   * still held, and nothing would send it), and the dead letter would be counted by no
   * one (`DeadLetters` is what pages on-call).
   */
  async #putOnce(input: Omit<PutCommandInput, 'Item'> & { Item: Record<string, unknown> }): Promise<boolean> {
    const token = randomUUID();
    return appliedOwn(this.#client.send(new PutCommand({ ...input, Item: { ...input.Item, written_by: token } })), {
      client: this.#client,
      table: this.#table,
      key: { pk: input.Item.pk, sk: input.Item.sk },
      attribute: 'written_by',
      token,
    });
  }

  /**
   * Where a held delivery goes in its resource's release order: at the seq of its first
   * event. A delivery of `sluice.gap` markers alone has no seq; it goes after whatever
   * its resource holds now, as it came: keyed at seq 0 it would be released before
   * events held earlier, and a subscriber that fetches the resource's state on the
   * marker would then be handed older events after it. ('~' sorts after the delivery
   * ids of events at the same seq; a hold SQS delivers again finds the same key, unless
   * more was held meanwhile, and then sends the marker twice, under the same ids.)
   */
  async #heldSk(message: DeliveryMessage, resource: string): Promise<string> {
    const seq = firstSeq(message);
    if (seq !== undefined) return `${resource}#${pad(seq)}#${message.deliveryId}`;
    const prefix = `${resource}#`;
    const result = await this.#client.send(
      new QueryCommand({
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :prefix)',
        ExpressionAttributeNames: names('pk', 'sk'),
        ExpressionAttributeValues: { ':pk': heldPk(message.webhookId), ':prefix': prefix },
        ScanIndexForward: false,
        Limit: 1,
        ConsistentRead: true,
        ProjectionExpression: '#sk',
      }),
    );
    const last = result.Items?.[0]?.sk;
    const at = last === undefined ? pad(0) : String(last).slice(prefix.length).split('#')[0];
    return `${prefix}${at}#~${message.deliveryId}`;
  }

  /**
   * The first `limit` held items in release order (fewer when they pass DynamoDB's 1 MB
   * page): the live ones, and apart those past the retention period (TTL deletes late),
   * which the caller removes and counts; `more` when items past the page are held.
   */
  async heldPage(webhookId: string, limit: number, now: number): Promise<{ live: HeldDelivery[]; expired: HeldDelivery[]; more: boolean }> {
    const result = await this.#client.send(
      new QueryCommand({
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': heldPk(webhookId) },
        ConsistentRead: true,
        Limit: limit,
      }),
    );
    const page = { live: [] as HeldDelivery[], expired: [] as HeldDelivery[], more: result.LastEvaluatedKey !== undefined };
    for (const item of result.Items ?? []) {
      const held = heldDelivery(item);
      (Number(item.expires_at_ms ?? Number.POSITIVE_INFINITY) > now ? page.live : page.expired).push(held);
    }
    return page;
  }

  /**
   * Held items past the retention period that TTL has not deleted yet, in release order,
   * read page by page while `more()` says so (a full cap of large deliveries is more than
   * one invocation should read).
   */
  async expiredHeld(webhookId: string, now: number, more: () => boolean): Promise<HeldDelivery[]> {
    const expired: HeldDelivery[] = [];
    const pages = this.#pages(
      {
        KeyConditionExpression: '#pk = :pk',
        FilterExpression: '#expires_at_ms <= :now',
        ExpressionAttributeNames: names('pk', 'expires_at_ms'),
        ExpressionAttributeValues: { ':pk': heldPk(webhookId), ':now': now },
        ConsistentRead: true,
      },
      more,
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) expired.push(heldDelivery(item));
    }
    return expired;
  }

  /** Held items in the webhook's partition, expired ones too (TTL may not have deleted them yet). */
  async heldItemCount(webhookId: string): Promise<number> {
    let count = 0;
    const pages = this.#pages({
      KeyConditionExpression: '#pk = :pk',
      ExpressionAttributeNames: names('pk'),
      ExpressionAttributeValues: { ':pk': heldPk(webhookId) },
      ConsistentRead: true,
      Select: 'COUNT',
    });
    for await (const page of pages) count += page.Count ?? 0;
    return count;
  }

  /** Keeps a held delivery held, as its next attempt (a release of it failed); false when it is gone. */
  async holdAgain(webhookId: string, sk: string, message: DeliveryMessage): Promise<boolean> {
    return applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: heldPk(webhookId), sk },
          UpdateExpression: 'SET #message = :message',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('message', 'pk'),
          ExpressionAttributeValues: { ':message': JSON.stringify(message) },
        }),
      ),
    );
  }

  /**
   * Removes a held item; false when it was already gone (a release that ran twice). A
   * removal the SDK sent again finds nothing to return when its first try applied and
   * lost its answer: that try's removal is this call's, and taken for another step's it
   * would leave the delivery in the held count (and a dead letter uncounted), which the
   * release then took for one lost to retention, with a gap marker for a loss that never
   * was. (Two steps of one release removing the same item at once, one of them sent
   * again, may both count it: the count then runs one below what is held.)
   */
  async removeHeld(webhookId: string, sk: string): Promise<boolean> {
    const result = await this.#client.send(
      new DeleteCommand({ TableName: this.#table, Key: { pk: heldPk(webhookId), sk }, ReturnValues: 'ALL_OLD' }),
    );
    return result.Attributes !== undefined || sentAgain(result);
  }

  /**
   * Counts events that were not delivered and not held (past the held cap, or
   * discarded by a drop switch), per reason and resource, for one gap marker each.
   * A count is owed until its marker goes, which is when the switch is lifted or the
   * webhook released, however long after: it is kept a year from its last event
   * (OVERFLOW_KEEP_MS), not the retention period, and goes when its marker is sent (or
   * its webhook is deleted).
   */
  async countOverflow(
    webhookId: string,
    resource: string,
    dropped: number,
    now: number,
    reason: GapMarker['data']['reason'] = 'held_overflow',
  ): Promise<void> {
    await this.#client.send(
      new UpdateCommand({
        TableName: this.#table,
        Key: { pk: overflowPk(webhookId), sk: `${reason}#${resource}` },
        UpdateExpression: 'ADD #dropped :n SET #expires_at = :exp, #since = if_not_exists(#since, :now), #last_at = :now',
        ExpressionAttributeNames: names('dropped', 'expires_at', 'since', 'last_at'),
        ExpressionAttributeValues: { ':n': dropped, ':exp': epochSeconds(now + OVERFLOW_KEEP_MS), ':now': now },
      }),
    );
  }

  /**
   * `countOverflow` for one delivery's events of one resource and reason, once however
   * often SQS hands the delivery back: a record that fails after its count (a later
   * resource's count, or the recheck's send) is delivered again, and counting it again
   * would make the gap marker over-report. The count goes first and then a receipt of
   * it, which a delivery handed back finds: one that dies between the two counts twice
   * (a marker that overstates, never a loss told to no one), as the count itself does
   * when the SDK sends it again after an answer was lost. False when it was counted before.
   */
  async countOverflowOnce(
    deliveryId: string,
    webhookId: string,
    resource: string,
    dropped: number,
    now: number,
    reason: GapMarker['data']['reason'],
  ): Promise<boolean> {
    const key = { pk: countedPk(webhookId), sk: `${deliveryId}#${reason}#${resource}` };
    const receipt = await this.#client.send(new GetCommand({ TableName: this.#table, Key: key, ConsistentRead: true }));
    if (receipt.Item) return false;
    await this.countOverflow(webhookId, resource, dropped, now, reason);
    // Kept as long as SQS may hand the delivery back, well within the retention period.
    await this.#client.send(new PutCommand({ TableName: this.#table, Item: { ...key, dropped, ...this.#expiry(now) } }));
    return true;
  }

  /**
   * The webhook's overflow counts that owe a gap marker (events counted that no sent
   * marker stands for), in key order: the first `limit` of them, or all if fewer (a
   * release sends their markers a step at a time, and steps on while it got `limit`).
   */
  async owedGaps(webhookId: string, now: number, limit = OWED_GAPS_PER_STEP): Promise<OverflowCount[]> {
    const owed: OverflowCount[] = [];
    const pages = queryPages(
      this.#client,
      {
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': overflowPk(webhookId) },
        ConsistentRead: true,
        Limit: limit,
      },
      { more: () => owed.length < limit },
    );
    for await (const page of pages) owed.push(...(await this.#owed(page.Items ?? [], now)));
    return owed.slice(0, limit);
  }

  async #owed(found: readonly Record<string, unknown>[], now: number): Promise<OverflowCount[]> {
    const items = await Promise.all(found.map((item) => (item.since === undefined ? this.#stampSince(item, now) : item)));
    return items
      .flatMap((item) => (item ? [item] : []))
      .map((item) => {
        const key = String(item.sk);
        const at = key.indexOf('#');
        return {
          key,
          reason: key.slice(0, at) as GapMarker['data']['reason'],
          resource: key.slice(at + 1),
          dropped: Number(item.dropped ?? 0),
          sent: Number(item.sent ?? 0),
          since: Number(item.since),
          // A count kept by an earlier version has no time of its last event: its stamp stands in.
          lastAt: Number(item.last_at ?? item.since),
        };
      })
      .filter((count) => count.dropped > count.sent);
  }

  /**
   * A count kept by an earlier version has no `since`, which tells one count from another
   * begun after it was cleared: it is given one when first read, the same for every reader
   * (if_not_exists), and read back. Undefined when the count is gone meanwhile.
   */
  async #stampSince(item: Record<string, unknown>, now: number): Promise<Record<string, unknown> | undefined> {
    try {
      const result = await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: item.pk, sk: item.sk },
          UpdateExpression: 'SET #since = if_not_exists(#since, :now)',
          // Never on a count that is gone (the update would create it).
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('since', 'pk'),
          ExpressionAttributeValues: { ':now': now },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return result.Attributes;
    } catch (error) {
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }

  /**
   * The marker owed for a count was sent: the count is cleared if it is still as read,
   * and true is answered. A count that grew meanwhile keeps the events counted since:
   * it notes what the sent marker stands for, and answers false (a marker is owed for
   * the rest).
   */
  async gapSent(webhookId: string, count: OverflowCount): Promise<boolean> {
    const key = { pk: overflowPk(webhookId), sk: count.key };
    // Both writes: the same count (since) as read, as one begun again after a clear is another's.
    const values = { ':dropped': count.dropped, ':since': count.since };
    const cleared = await applied(
      this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: key,
          // Only while unchanged: an event counted after the read must not go without its marker.
          ConditionExpression: '#dropped = :dropped AND #since = :since',
          ExpressionAttributeNames: names('dropped', 'since'),
          ExpressionAttributeValues: values,
        }),
      ),
    );
    if (cleared) return true;
    // Grown: what was sent is noted, never moved back (a step that ran twice may have noted more),
    // and never on a count that is gone (the update would create it).
    await applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: key,
          UpdateExpression: 'SET #sent = :dropped',
          ConditionExpression: 'attribute_exists(#pk) AND #since = :since AND (attribute_not_exists(#sent) OR #sent < :dropped)',
          ExpressionAttributeNames: names('pk', 'since', 'sent'),
          ExpressionAttributeValues: values,
        }),
      ),
    );
    return false;
  }

  /**
   * Keeps a delivery past its last attempt as a dead letter; false when it already was
   * one. Its key is the delivery's (the time its oldest event was accepted, then its
   * id), not the time of the write, so that a step run again after a crash (SQS
   * delivers it again) finds the dead letter it wrote instead of writing a second. A
   * delivery a dead-letter replay sent again replaces the letter it was sent from,
   * which that replay may not have removed yet (see `forgetDeadLetter`), and is kept
   * with its replay's time (`replayed_at`), so that the replay does not remove it.
   */
  async deadLetter(message: DeliveryMessage, reason: string, now: number): Promise<boolean> {
    const replayedAt = message.replayedAt;
    return this.#putOnce({
      TableName: this.#table,
      Item: {
        pk: deadPk(message.webhookId),
        sk: `${pad(acceptedAt(message))}#${message.deliveryId}`,
        reason,
        message: JSON.stringify(message),
        ...(replayedAt !== undefined && { replayed_at: replayedAt }),
        ...this.#expiry(now),
      },
      ...(replayedAt === undefined
        ? { ConditionExpression: 'attribute_not_exists(#pk)', ExpressionAttributeNames: names('pk') }
        : {
            // Written by this delivery before (a step run again): not again.
            ConditionExpression: 'attribute_not_exists(#pk) OR attribute_not_exists(#replayed_at) OR #replayed_at < :replayed_at',
            ExpressionAttributeNames: names('pk', 'replayed_at'),
            ExpressionAttributeValues: { ':replayed_at': replayedAt },
          }),
    });
  }

  /**
   * A page of a webhook's live dead letters, in the order their oldest events were
   * accepted, after the one keyed `afterSk` (a page's `lastSk`): at most `limit`, and no
   * more once `bytes` of their messages are read (the first is always taken). `more`
   * tells whether any follow.
   */
  async deadLetterPage(
    webhookId: string,
    now: number,
    limit: number,
    options: { afterSk?: string; bytes?: number } = {},
  ): Promise<{ letters: DeadLetter[]; more: boolean; lastSk: string | undefined }> {
    const letters: DeadLetter[] = [];
    let bytes = 0;
    let more = false;
    // Within `bytes` with the next letter in it (the first one always: a letter is far smaller than any limit given).
    const full = (size: number) =>
      letters.length >= limit || (options.bytes !== undefined && letters.length > 0 && bytes + size > options.bytes);
    const pages = queryPages(
      this.#client,
      {
        TableName: this.#table,
        KeyConditionExpression: options.afterSk === undefined ? '#pk = :pk' : '#pk = :pk AND #sk > :after',
        FilterExpression: '#expires_at_ms > :now',
        ExpressionAttributeNames: names('pk', 'expires_at_ms', ...(options.afterSk === undefined ? [] : ['sk'])),
        ExpressionAttributeValues: {
          ':pk': deadPk(webhookId),
          ':now': now,
          ...(options.afterSk !== undefined && { ':after': options.afterSk }),
        },
        Limit: limit + 1,
        // A replay that follows `has_more` at once must not read again letters the one
        // before it sent and removed.
        ConsistentRead: true,
      },
      { more: () => !more },
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) {
        const message = String(item.message);
        const size = Buffer.byteLength(message);
        if (full(size)) {
          more = true;
          break;
        }
        bytes += size;
        const replayedAt = item.replayed_at === undefined ? undefined : Number(item.replayed_at);
        letters.push({ sk: String(item.sk), reason: String(item.reason), message: JSON.parse(message), replayedAt });
      }
    }
    return { letters, more, lastSk: letters.at(-1)?.sk };
  }

  /**
   * Removes a dead letter (keyed `sk`, as `deadLetterPage` gives it) once it was sent
   * again: only the one read (`replayedAt` as the page gave it), not one its delivery,
   * sent again and failed again meanwhile, wrote in its place.
   */
  async forgetDeadLetter(webhookId: string, sk: string, replayedAt: number | undefined): Promise<void> {
    await applied(
      this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: { pk: deadPk(webhookId), sk },
          ConditionExpression: replayedAt === undefined ? 'attribute_not_exists(#replayed_at)' : '#replayed_at = :replayed_at',
          ExpressionAttributeNames: names('replayed_at'),
          ...(replayedAt !== undefined && { ExpressionAttributeValues: { ':replayed_at': replayedAt } }),
        }),
      ),
    );
  }

  /**
   * Takes one send from a budget of `limit` per `windowMs` for the current window
   * (a failing endpoint's attempts, or a tenant's failing endpoints' together); false
   * when the budget is spent (the caller delays the delivery, never fails it).
   * Concurrent takes of one budget in this container (the records of one invocation)
   * share one write when the budget has room for all.
   */
  takeSendSlot(webhookId: string, limit: number, windowMs: number, now: number): Promise<boolean> {
    const window = Math.floor(now / windowMs);
    return gathered(this.#takes, `${webhookId}|${limit}|${windowMs}|${window}`, async (count) => {
      if (count > 1 && count <= limit && (await this.#take(webhookId, limit, windowMs, window, count))) return Array(count).fill(true);
      // Alone, or the budget has no room for all of them: one by one, as far as it goes.
      const granted: boolean[] = [];
      for (let i = 0; i < count; i++) granted.push(await this.#take(webhookId, limit, windowMs, window, 1));
      return granted;
    });
  }

  /**
   * Takes up to `want` units of a budget of `limit` per `windowMs` for `key` (a webhook's
   * replays), as many as the current window has left: answers how many it got (0 when
   * the window's are spent) and the window, for `adjustBudget`. Each take is one
   * conditional write, so callers at once never take more than the window holds between
   * them.
   */
  async takeBudget(key: string, want: number, limit: number, windowMs: number, now: number): Promise<{ taken: number; window: number }> {
    const window = Math.floor(now / windowMs);
    for (let tries = 0; tries < 5; tries++) {
      const counted = await this.#client.send(
        new GetCommand({
          TableName: this.#table,
          Key: { pk: ratePk(key, windowMs, window), sk: 'rate' },
          ConsistentRead: true,
          ProjectionExpression: '#sent',
          ExpressionAttributeNames: names('sent'),
        }),
      );
      const room = limit - Number(counted.Item?.sent ?? 0);
      if (room <= 0) return { taken: 0, window };
      const taken = Math.min(want, room);
      if (await this.#take(key, limit, windowMs, window, taken)) return { taken, window };
      // Another caller took some of the room meanwhile: read what is left again.
    }
    return { taken: 0, window };
  }

  /**
   * Adds `count` (less than 0 gives units back) to what `takeBudget` counted for `key`
   * in `window`: what a caller used, once it knows, against what it took.
   */
  async adjustBudget(key: string, windowMs: number, window: number, count: number): Promise<void> {
    if (count === 0) return;
    await this.#client
      .send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: ratePk(key, windowMs, window), sk: 'rate' },
          UpdateExpression: 'ADD #sent :count',
          // Only a window's item still kept: one whose expiry has removed it needs no correction.
          ConditionExpression: 'attribute_exists(#sent)',
          ExpressionAttributeNames: names('sent'),
          ExpressionAttributeValues: { ':count': count },
        }),
      )
      .catch((error: unknown) => {
        if (!isConditionFailure(error)) throw error;
      });
  }

  /**
   * True for one caller per window of `windowMs` for `key`, across containers (a
   * budget of one send, see takeSendSlot). A container that saw the window taken
   * answers false without writing again, so that asking once per record costs one
   * write per container and window.
   */
  async takeOnce(key: string, windowMs: number, now: number): Promise<boolean> {
    const window = Math.floor(now / windowMs);
    if (this.#takenWindows.get(key) === window) return false;
    const taken = await this.takeSendSlot(key, 1, windowMs, now);
    this.#takenWindows.set(key, window);
    if (this.#takenWindows.size > 10_000) this.#takenWindows.clear();
    return taken;
  }

  /**
   * Reserves one POST's share (`intervalMs`) of the endpoint's time and answers when
   * it may go (epoch ms; at most `now` means at once): see core/endpoint-pace.ts.
   * Reservations for one endpoint in this container (the records of one invocation)
   * share one write, and take consecutive shares.
   */
  reserveSend(webhookId: string, intervalMs: number, now: number): Promise<number> {
    return gathered(this.#paces, `${webhookId}|${intervalMs}`, async (count) => {
      const freeFrom = await this.#reservePace(webhookId, count * intervalMs, now);
      return Array.from({ length: count }, (_, i) => paceSendAt(freeFrom + i * intervalMs, now, intervalMs));
    });
  }

  /**
   * Moves the endpoint's tat on by `span` and answers where the span starts. Two
   * conditional writes, each atomic, so no read and no lost update between senders:
   * an endpoint whose time is free starts again from now; a busy one continues from
   * its tat. Whichever answered last for this endpoint is tried first. Neither write
   * is idempotent: if the SDK retries one that applied but whose answer was lost, the
   * span is taken twice, which leaves the endpoint idle for it (a lower rate, never a
   * higher one).
   */
  async #reservePace(webhookId: string, span: number, now: number): Promise<number> {
    const key = { pk: pacePk(webhookId), sk: 'pace' };
    const expiry = this.#expiry(now);
    const free = () =>
      applied(
        this.#client.send(
          new UpdateCommand({
            TableName: this.#table,
            Key: key,
            UpdateExpression: 'SET #tat = :end, #expires_at = :exp',
            ConditionExpression: 'attribute_not_exists(#tat) OR #tat <= :now',
            ExpressionAttributeNames: names('tat', 'expires_at'),
            ExpressionAttributeValues: { ':end': now + span, ':now': now, ':exp': expiry.expires_at },
          }),
        ),
      );
    const busy = async () => {
      try {
        const result = await this.#client.send(
          new UpdateCommand({
            TableName: this.#table,
            Key: key,
            UpdateExpression: 'SET #tat = #tat + :span, #expires_at = :exp',
            ConditionExpression: '#tat > :now',
            ExpressionAttributeNames: names('tat', 'expires_at'),
            ExpressionAttributeValues: { ':span': span, ':now': now, ':exp': expiry.expires_at },
            ReturnValues: 'UPDATED_NEW',
          }),
        );
        return Number(result.Attributes?.tat) - span;
      } catch (error) {
        if (isConditionFailure(error)) return undefined;
        throw error;
      }
    };
    // tat only grows, so once `free` is refused `busy` holds; the loop covers the item
    // expiring in between.
    for (let tries = 0; tries < 3; tries++) {
      if ((this.#busyUntil.get(webhookId) ?? 0) <= now && (await free())) {
        this.#busyUntil.delete(webhookId);
        return now;
      }
      const from = await busy();
      if (from !== undefined) {
        this.#busyUntil.set(webhookId, from + span);
        if (this.#busyUntil.size > 10_000) this.#busyUntil.clear();
        return from;
      }
      this.#busyUntil.delete(webhookId);
    }
    throw new Error(`Could not reserve a send for webhook ${webhookId}`);
  }

  /**
   * Gives the endpoint's time back: it is free from now. For an endpoint whose pace got
   * quicker (a new URL, or one that answers quickly again after slow answers): its tat
   * was moved on at the slow pace, by every share of its backlog, and would hold each
   * new delivery behind them at that pace (see `paceGivenBack`).
   */
  async givePaceBack(webhookId: string): Promise<void> {
    await this.#client.send(new DeleteCommand({ TableName: this.#table, Key: { pk: pacePk(webhookId), sk: 'pace' } }));
    this.#busyUntil.delete(webhookId);
    this.#paceSeen.delete(webhookId);
  }

  /**
   * Whether the endpoint's time was given back (`givePaceBack`) since a share that lets
   * a delivery go at `sendAt` was reserved. The tat only grows past every share it has
   * given, so one before `sendAt` was reset since: a share taken now comes sooner.
   *
   * Answered from the tat this container read within PACE_SEEN_MS, if it did: every
   * look of a slow endpoint's backlog read the one item otherwise, hundreds of times a
   * second for a backlog of hours, up to the 3,000 reads a second of a partition that
   * other tenants' items share. Safe because a delivery first looks a minute at least
   * after its share was taken (core/endpoint-pace.ts `paceLookSeconds`), so a tat read
   * in the last second was read after it; a time given back within that second is seen
   * at the delivery's next look instead.
   */
  async paceGivenBack(webhookId: string, sendAt: number, now: number): Promise<boolean> {
    const tat = await this.paceFreeAt(webhookId, now);
    return tat === undefined || tat < sendAt;
  }

  /**
   * When the endpoint's time is next free (epoch ms; at most `now`, or undefined: free now),
   * as this container read it within PACE_SEEN_MS, without taking any of it: whether a
   * slow endpoint's delivery would get a share far ahead, and is held instead (see
   * core/endpoint-pace.ts `holdsBehindPace`). Up to a second old: a share given meanwhile
   * moves it on by one POST's share, a time given back in that second is seen a second on.
   */
  async paceFreeAt(webhookId: string, now: number): Promise<number | undefined> {
    let seen = this.#paceSeen.get(webhookId);
    if (seen === undefined || now < seen.at || now - seen.at >= PACE_SEEN_MS) {
      const read = this.#client
        .send(new GetCommand({ TableName: this.#table, Key: { pk: pacePk(webhookId), sk: 'pace' }, ConsistentRead: true }))
        .then((result) => (result.Item?.tat === undefined ? undefined : Number(result.Item.tat)));
      const fresh = { at: now, tat: read };
      seen = fresh;
      if (this.#paceSeen.size >= 10_000) this.#paceSeen.clear();
      this.#paceSeen.set(webhookId, fresh);
      // A read that failed is not kept: the next look reads again.
      read.catch(() => {
        if (this.#paceSeen.get(webhookId) === fresh) this.#paceSeen.delete(webhookId);
      });
    }
    return seen.tat;
  }

  /**
   * Takes `count` sends of a window's budget. With a token of its own, which the condition
   * refuses where it already is: a take whose answer was lost, refused on the SDK's second
   * try (by its own token, or by the budget it used up), finds its token and is still
   * its caller's. Taken for another's, a recheck's window (`takeOnce`) would have been
   * taken by no one that sends it, and the delivery held under a switch lifted meanwhile
   * would wait for a later delivery's hold, if one ever came.
   */
  async #take(webhookId: string, limit: number, windowMs: number, window: number, count: number): Promise<boolean> {
    const key = { pk: ratePk(webhookId, windowMs, window), sk: 'rate' };
    const token = randomUUID();
    return appliedOwn(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: key,
          UpdateExpression: 'ADD #sent :count SET #expires_at = :exp, #take_token = :token',
          ConditionExpression:
            '(attribute_not_exists(#sent) OR #sent <= :room) AND (attribute_not_exists(#take_token) OR #take_token <> :token)',
          ExpressionAttributeNames: names('sent', 'expires_at', 'take_token'),
          ExpressionAttributeValues: {
            ':count': count,
            ':room': limit - count,
            ':token': token,
            ':exp': Math.floor((window * windowMs) / 1000) + Math.ceil(windowMs / 1000) + 120,
          },
        }),
      ),
      { client: this.#client, table: this.#table, key, attribute: 'take_token', token },
    );
  }

  /**
   * Removes everything kept for a deleted webhook: its endpoint's pace, and its held
   * deliveries and overflow counts, every page of them, throwing if DynamoDB still left
   * some unprocessed after a few tries (TTL removes those, late). Answers how
   * many held events went with it: events only, as a held `sluice.gap` marker stands
   * for events counted when they were dropped.
   *
   * The pace first: deliveries waiting for shares of it look at it (`paceGivenBack`),
   * and finding it gone they are dropped at their next look, 15 minutes at most, where
   * they went round the shared deliver queue until their times (a slow endpoint's
   * backlog, days ahead) to be dropped only then.
   */
  async forget(webhookId: string): Promise<number> {
    await this.givePaceBack(webhookId);
    let heldEvents = 0;
    for (const pk of [heldPk(webhookId), overflowPk(webhookId)]) {
      const pages = this.#pages({
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': pk },
        // A delivery held (or counted) in the second before the deletion is removed too:
        // a replica that had not seen it yet would leave it a week (a count, a year).
        ConsistentRead: true,
      });
      for await (const page of pages) {
        const items = page.Items ?? [];
        if (pk === heldPk(webhookId)) {
          for (const item of items) heldEvents += eventCount((JSON.parse(String(item.message)) as DeliveryMessage).events);
        }
        // What DynamoDB leaves unprocessed (a throttled partition) is sent again: left, a
        // deleted webhook's held events would stay a week, its overflow counts a year.
        await batchWrite(
          this.#client,
          this.#table,
          items.map((item) => ({ DeleteRequest: { Key: { pk: item.pk, sk: item.sk } } })),
        );
      }
    }
    return heldEvents;
  }
}

/** A log item's events as JSON: compressed since the log was compressed, plain in items logged before. */
function loggedEventsText(item: Record<string, unknown>): string {
  const compressed = item.events_z as Uint8Array | undefined;
  return compressed ? inflateRawSync(compressed).toString('utf8') : String(item.events);
}
