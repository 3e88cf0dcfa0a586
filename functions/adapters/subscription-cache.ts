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
 * bump. The webhooks on a resource come from the `by_resource` index, which DynamoDB
 * updates a little after the write (typically well under a second): a lookup made
 * within INDEX_SETTLE_MS of the bump may miss the write, so it is kept only until
 * then and made once more after, not for the whole `maxAgeMs`.
 *
 * A turn that uses an entry in the last `refreshAheadMs` of its age still gets the
 * entry, and the lookup is made again behind it (the handler waits for it before it
 * returns: `refreshed`). Otherwise an active resource's turn would make its lookups
 * before its deliveries once a minute, and the resources first looked up together
 * (a burst of new objects, a cold start) would all do so in the same few seconds.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { type DynamoDBDocumentClient, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { Subscriber } from '../core/model.ts';
import { SUBSCRIPTIONS_SK, tenantPk } from '../definitions/tables.ts';
import { names } from './dynamo.ts';

const versionKey = (tenantId: string) => ({ pk: tenantPk(tenantId), sk: SUBSCRIPTIONS_SK });

/** How long after a bump the `by_resource` index may still lag behind the write it follows. */
export const INDEX_SETTLE_MS = 5_000;

/** How long before an entry ages out a turn that uses it has it looked up again, behind the turn. */
export const REFRESH_AHEAD_MS = 15_000;

/**
 * How long an invocation waits for the lookups made behind its turns. A lookup takes
 * milliseconds; one that hangs (the SDK's clients have no request timeout) must not
 * hold the invocation, and its batch's doorbells, to the function's timeout for work
 * that is only ahead of time: the entry is still good until it ages out.
 */
export const REFRESH_WAIT_MS = 2_000;

/**
 * How long after a version read was sent another turn may share it instead of reading
 * again. A bump waits as long after its write before it returns, so a turn that starts
 * after a change was answered never shares a read sent before the change was written
 * (one held up by the network or the SDK's retries would otherwise hand it the old
 * version, and with it lookups that miss the change).
 */
export const SHARED_READ_MS = 25;

/**
 * Bumps a tenant's subscriptions version: lookups cached under the old one are not used
 * again by turns that start once it returns (SHARED_READ_MS after the write).
 */
export async function bumpSubscriptions(client: DynamoDBDocumentClient, table: string, tenantId: string): Promise<void> {
  await client.send(
    new UpdateCommand({
      TableName: table,
      Key: versionKey(tenantId),
      UpdateExpression: 'SET #bumped_at = :now ADD #version :one',
      ExpressionAttributeNames: names('version', 'bumped_at'),
      ExpressionAttributeValues: { ':one': 1, ':now': Date.now() },
    }),
  );
  await sleep(SHARED_READ_MS);
}

interface Entry<T> {
  readonly version: number;
  /** Kept no later than this (epoch ms): a lookup made while the index may still lag. */
  readonly until: number;
  readonly value: Promise<T>;
  /**
   * From when (epoch ms) a turn that uses it has it looked up again, behind the turn;
   * unset for a lookup kept only until the index settles, and once its refresh started.
   */
  refreshFrom?: number;
}

export interface SubscriptionLookups {
  onResource(tenantId: string, resource: string): Promise<readonly Subscriber[]>;
  /** When the stream on the resource expires (epoch ms); undefined when there is none. */
  streamExpiry(tenantId: string, resource: string): Promise<number | undefined>;
}

export class SubscriptionCache {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;
  readonly #lookups: SubscriptionLookups;
  readonly #maxAgeMs: number;
  readonly #refreshAheadMs: number;
  readonly #refreshWaitMs: number;
  readonly #maxEntries: number;
  /**
   * Refreshes under way, which `refreshed` waits for, each for at most `refreshWaitMs`
   * from its start: it leaves this set when it ends or when that time is up.
   */
  readonly #refreshes = new Set<Promise<void>>();
  readonly #webhooks = new Map<string, Entry<readonly Subscriber[]>>();
  readonly #streams = new Map<string, Entry<number | undefined>>();
  /** When each stream's expiry was last read (epoch ms): one already past then is not read again (see streamActive). */
  readonly #streamsReadAt = new Map<string, number>();
  /** Version reads in flight, and when each was sent (performance.now()). */
  readonly #versions = new Map<string, { readonly read: Promise<number>; readonly sentAt: number }>();
  /**
   * When each tenant's version last read was bumped (epoch ms, the writer's clock; 0 when
   * unknown), and when this cache first used it (its own clock): the bump came before.
   */
  readonly #bumpedAt = new Map<string, { version: number; at: number; seenAt?: number }>();

  constructor(options: {
    client: DynamoDBDocumentClient;
    controlTable: string;
    lookups: SubscriptionLookups;
    maxAgeMs?: number;
    refreshAheadMs?: number;
    refreshWaitMs?: number;
    maxEntries?: number;
  }) {
    this.#client = options.client;
    this.#table = options.controlTable;
    this.#lookups = options.lookups;
    this.#maxAgeMs = options.maxAgeMs ?? 60_000;
    this.#refreshAheadMs = Math.min(options.refreshAheadMs ?? REFRESH_AHEAD_MS, this.#maxAgeMs);
    this.#refreshWaitMs = options.refreshWaitMs ?? REFRESH_WAIT_MS;
    this.#maxEntries = options.maxEntries ?? 20_000;
  }

  /**
   * The tenant's subscriptions version, read consistently (0 before the first bump).
   * Turns that start together (one invocation's batch) share a read in flight, if it
   * was sent at most SHARED_READ_MS ago: a bump waits that long before its change is
   * answered, so the read they share came after any change answered before they started.
   */
  version(tenantId: string): Promise<number> {
    const now = performance.now();
    const inFlight = this.#versions.get(tenantId);
    if (inFlight && now - inFlight.sentAt <= SHARED_READ_MS) return inFlight.read;
    const read: Promise<number> = this.#client
      .send(
        new GetCommand({
          TableName: this.#table,
          Key: versionKey(tenantId),
          ConsistentRead: true,
          // The distributor may read only what it names (DISTRIBUTOR_CONTROL_ATTRIBUTES).
          ProjectionExpression: '#version, #bumped_at',
          ExpressionAttributeNames: names('version', 'bumped_at'),
        }),
      )
      .then((result) => {
        const version = Number(result.Item?.version ?? 0);
        // Reads may overlap (one sent over SHARED_READ_MS after another): an older one
        // that answers last must not replace what a newer one learnt of the last bump.
        const known = this.#bumpedAt.get(tenantId);
        if (!known || version > known.version) {
          if (this.#bumpedAt.size >= this.#maxEntries) this.#bumpedAt.clear();
          this.#bumpedAt.set(tenantId, { version, at: Number(result.Item?.bumped_at ?? 0) });
        }
        return version;
      })
      .finally(() => {
        if (this.#versions.get(tenantId)?.read === read) this.#versions.delete(tenantId);
      });
    this.#versions.set(tenantId, { read, sentAt: now });
    return read;
  }

  webhooksOn(tenantId: string, resource: string, version: number, now: number): Promise<readonly Subscriber[]> {
    // From the index: a lookup made just after a bump may not have the write yet.
    return this.#cached(this.#webhooks, tenantId, resource, version, now, () => this.#lookups.onResource(tenantId, resource), {
      indexed: true,
    });
  }

  async streamActive(tenantId: string, resource: string, version: number, now: number): Promise<boolean> {
    // Polls push a stream's expiry out without a bump: an expiry kept from an earlier
    // turn that has passed since is read again. Not one already past when it was read:
    // that stream had expired, and comes back only with a bump (a poll that starts it
    // anew), so reading it again on every turn of its resource would find the same.
    const key = `${tenantId}|${resource}`;
    const kept = this.#streams.get(key);
    const keptExpiry = kept ? await kept.value.catch(() => undefined) : undefined;
    const readAt = this.#streamsReadAt.get(key) ?? Number.NEGATIVE_INFINITY;
    if (keptExpiry !== undefined && keptExpiry <= now && keptExpiry > readAt) this.#streams.delete(key);
    const expiry = await this.#cached(this.#streams, tenantId, resource, version, now, () => {
      if (this.#streamsReadAt.size >= this.#maxEntries) this.#streamsReadAt.clear();
      this.#streamsReadAt.set(key, now);
      return this.#lookups.streamExpiry(tenantId, resource);
    });
    return (expiry ?? 0) > now;
  }

  /**
   * Waits for the lookups made again behind the turns (see the class comment): Lambda
   * freezes what is still under way when the handler returns. Only those under way now,
   * which include all the caller's turns started: where invocations share a container
   * (the sandbox), another's started later must not keep this one from returning, and
   * its batch's doorbells from being deleted, for as long as some lookup is under way.
   * And each at most `refreshWaitMs` (REFRESH_WAIT_MS) from its start, so a lookup that
   * hangs is waited for by the invocation that started it, not by every later one.
   */
  async refreshed(): Promise<void> {
    await Promise.all([...this.#refreshes]);
  }

  #cached<T>(
    map: Map<string, Entry<T>>,
    tenantId: string,
    resource: string,
    version: number,
    now: number,
    load: () => Promise<T>,
    options: { indexed?: boolean } = {},
  ): Promise<T> {
    const key = `${tenantId}|${resource}`;
    const entry = map.get(key);
    if (entry && entry.version === version && now < entry.until) {
      if (entry.refreshFrom !== undefined && now >= entry.refreshFrom) this.#refresh(map, key, entry, tenantId, now, load, options);
      return entry.value;
    }
    if (map.size >= this.#maxEntries) map.clear();
    const value = load();
    this.#keep(map, key, tenantId, version, now, value, options);
    // A failed lookup is not kept.
    value.catch(() => {
      if (map.get(key)?.value === value) map.delete(key);
    });
    return value;
  }

  /** Looks an entry up again, once, behind the turn that used it; it replaces the entry unless a newer one did. */
  #refresh<T>(
    map: Map<string, Entry<T>>,
    key: string,
    entry: Entry<T>,
    tenantId: string,
    now: number,
    load: () => Promise<T>,
    options: { indexed?: boolean },
  ): void {
    entry.refreshFrom = undefined;
    const value = load();
    const done = value.then(
      () => {
        if (map.get(key) === entry) this.#keep(map, key, tenantId, entry.version, now, value, options);
      },
      // A failed refresh leaves the entry until it ages out; the next turn after that looks again.
      () => undefined,
    );
    // Waited for until it ends or for `refreshWaitMs`, whichever is first. The time is
    // counted from here, not from a `refreshed` call: one that hangs must not hold each
    // later invocation of the container for `refreshWaitMs` again (a timer that came due
    // while Lambda froze the container fires at the thaw, before the next turns end).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited: Promise<void> = Promise.race([
      done,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.#refreshWaitMs);
      }),
    ]).finally(() => {
      clearTimeout(timer);
      this.#refreshes.delete(waited);
    });
    this.#refreshes.add(waited);
  }

  #keep<T>(
    map: Map<string, Entry<T>>,
    key: string,
    tenantId: string,
    version: number,
    now: number,
    value: Promise<T>,
    options: { indexed?: boolean },
  ): void {
    const bumped = this.#bumpedAt.get(tenantId);
    let settled = 0;
    if (options.indexed && bumped && bumped.version === version) {
      // The bump was read before this lookup, so it was made before this cache first used
      // it, whatever the writer's clock says: a writer's clock that runs ahead must not keep
      // a lookup that missed the write for as long as it is ahead (nor past `maxAgeMs`).
      bumped.seenAt ??= now;
      settled = Math.min(bumped.at, bumped.seenAt) + INDEX_SETTLE_MS;
    }
    if (now < settled) {
      map.set(key, { version, until: settled, value });
      return;
    }
    const until = now + this.#maxAgeMs;
    map.set(key, { version, until, value, refreshFrom: until - this.#refreshAheadMs });
  }
}
