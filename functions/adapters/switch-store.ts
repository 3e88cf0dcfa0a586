/**
 * Kill switches in the control table, all under one partition (there are few),
 * and a cache that every stage reads them through: at most `ttlMs` old (≤ 10 s),
 * so a switch takes effect within seconds without a read per event.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteCommand, type DynamoDBDocumentClient, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { Switch } from '../core/switches.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { isConditionFailure, markOnce, names, queryPages } from './dynamo.ts';

const PK = CONTROL_PK.switches;

export class SwitchStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  /**
   * Sets a switch and returns it as stored. On a scope that already has a switch with
   * the same action, only its reason changes: `created_at` says since when the action
   * has been in force, so a retried PUT must not move it. Another action replaces it.
   */
  async set(value: Switch): Promise<Switch> {
    try {
      const result = await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: PK, sk: value.id },
          UpdateExpression:
            'SET #id = :id, #scope = :scope, #tenant = :tenant, #action = :action, #reason = :reason, #created_at = if_not_exists(#created_at, :created_at)' +
            (value.target === undefined ? '' : ', #target = :target'),
          // The same action, or none yet: a different one, or one being lifted, is replaced
          // below (created_at too, and the lift's mark, so that its end leaves this one).
          ConditionExpression: 'attribute_not_exists(#pk) OR (#action = :action AND attribute_not_exists(#lifted_at))',
          ExpressionAttributeNames: names(
            'pk',
            'lifted_at',
            'id',
            'scope',
            'tenant',
            'action',
            'reason',
            'created_at',
            ...(value.target === undefined ? [] : ['target']),
          ),
          ExpressionAttributeValues: {
            ':id': value.id,
            ':scope': value.scope,
            ':tenant': value.tenant,
            ':action': value.action,
            ':reason': value.reason,
            ':created_at': value.created_at,
            ...(value.target !== undefined && { ':target': value.target }),
          },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return toSwitch(result.Attributes ?? {});
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
    await this.#client.send(new PutCommand({ TableName: this.#table, Item: { pk: PK, sk: value.id, ...value } }));
    return value;
  }

  /**
   * The switches in force. With `lifting`, also those a lift marked and has not ended
   * (it failed halfway: the DELETE sent again finishes it), each with when that lift
   * began, for on-call's list: they are in force no more, but what they stopped may
   * not all have been woken yet.
   */
  async list(options: { lifting?: boolean } = {}): Promise<Array<Switch & { lift_started_at?: string }>> {
    // Every page: a query answers at most 1 MB (some 1,300 switches with long reasons), and
    // a switch past the first page would be answered 200 and listed nowhere, nor obeyed.
    const items: Record<string, unknown>[] = [];
    const pages = queryPages(this.#client, {
      TableName: this.#table,
      KeyConditionExpression: '#pk = :pk',
      // The distributor may read only what it names (DISTRIBUTOR_CONTROL_ATTRIBUTES).
      ProjectionExpression: '#id, #scope, #tenant, #target, #action, #reason, #created_at, #lifted_at',
      ExpressionAttributeNames: names('pk', 'id', 'scope', 'tenant', 'target', 'action', 'reason', 'created_at', 'lifted_at'),
      ExpressionAttributeValues: { ':pk': PK },
      ConsistentRead: true,
    });
    for await (const page of pages) items.push(...(page.Items ?? []));
    // A switch being lifted is in force no more; its item stays until the lift has woken what it stopped.
    return items
      .filter((item) => options.lifting || item.lifted_at === undefined)
      .map((item) => ({
        ...toSwitch(item),
        ...(item.lifted_at !== undefined && { lift_started_at: new Date(Number(item.lifted_at)).toISOString() }),
      }));
  }

  /**
   * The first half of a lift: marks the switch lifted (every reader leaves it out
   * from then on) and returns it, with the mark `endLift` takes; undefined when there
   * is none. A switch already marked (a lift that failed before its end) is returned
   * with its mark, so that the lift sent again wakes what it stopped and ends it.
   */
  async beginLift(id: string, now: number): Promise<{ lifted: Switch; mark: number } | undefined> {
    const item = await markOnce(this.#client, this.#table, { pk: PK, sk: id }, 'lifted_at', now);
    return item && { lifted: toSwitch(item), mark: Number(item.lifted_at) };
  }

  /**
   * Removes a switch whose target is gone (a deleted webhook's, or one set as its tenant
   * or webhook was being deleted): there is nothing left for it to stop, nor for a lift to wake.
   */
  async forget(id: string): Promise<void> {
    await this.#client.send(new DeleteCommand({ TableName: this.#table, Key: { pk: PK, sk: id } }));
  }

  /** The end of a lift: removes the switch, unless it was set again meanwhile (which removed the mark). */
  async endLift(id: string, mark: number): Promise<void> {
    try {
      await this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: { pk: PK, sk: id },
          ConditionExpression: '#lifted_at = :mark',
          ExpressionAttributeNames: names('lifted_at'),
          ExpressionAttributeValues: { ':mark': mark },
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }
}

function toSwitch(item: Record<string, unknown>): Switch {
  return {
    id: String(item.id),
    scope: item.scope as Switch['scope'],
    tenant: String(item.tenant),
    target: item.target as string | undefined,
    action: item.action as Switch['action'],
    reason: String(item.reason ?? ''),
    created_at: String(item.created_at),
  };
}

export interface SwitchReader {
  current(): Promise<readonly Switch[]>;
  /** Reads now, skipping the cache (after a switch was lifted). */
  refresh(): Promise<readonly Switch[]>;
}

/** No switches at all (tests of other mechanisms). */
export const NO_SWITCHES: SwitchReader = { current: async () => [], refresh: async () => [] };

/**
 * The least time between a container's reads of the switches when refreshes follow each
 * other. Every turn of a paused or dropped object refreshes (see the distributor), and
 * all the switches are one partition, which DynamoDB serves at most 3,000 strongly
 * consistent reads a second: back to back, one a round trip (a few ms) from each of the
 * distributor's 40 containers, the turns of one tenant put under a switch would pass
 * that, and every stage's reads of the switches would be throttled, every tenant's turns
 * and deliveries failing with them, just as on-call set the switch. Spaced so, at most 10
 * a second from each container; the turns asking meanwhile share the read sent next.
 */
export const REFRESH_SPACING_MS = 100;

/**
 * Reads switches at most once per `ttlMs`; concurrent callers share one read. A
 * refresh shares only a read sent after it was asked: one already under way may have
 * been sent before the lift it is asked for, and would answer with the switch still on.
 * It is sent REFRESH_SPACING_MS after the read before it at the earliest.
 */
export class CachedSwitches implements SwitchReader {
  readonly #store: Pick<SwitchStore, 'list'>;
  readonly #ttlMs: number;
  readonly #now: () => number;
  #value: readonly Switch[] = [];
  #loadedAt = Number.NEGATIVE_INFINITY;
  /** The read under way, and the number of the last read whose answer is kept. */
  #loading: Promise<readonly Switch[]> | undefined;
  /** When the read under way was sent (by `now`). */
  #loadingSentAt = Number.NEGATIVE_INFINITY;
  #reads = 0;
  #kept = 0;
  /** The read that refreshes wait for: sent once the one under way has answered. */
  #refreshing: Promise<readonly Switch[]> | undefined;
  /** When the last read was sent (performance.now(), for REFRESH_SPACING_MS). */
  #lastSentAt = Number.NEGATIVE_INFINITY;

  constructor(store: Pick<SwitchStore, 'list'>, ttlMs: number, now: () => number = Date.now) {
    this.#store = store;
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  refresh(): Promise<readonly Switch[]> {
    this.#refreshing ??= (async () => {
      await this.#loading?.catch(() => undefined);
      const wait = this.#lastSentAt + REFRESH_SPACING_MS - performance.now();
      if (wait > 0) await sleep(Math.min(wait, REFRESH_SPACING_MS));
      // Sent now: after every refresh that joined this one was asked.
      this.#refreshing = undefined;
      return this.#load();
    })();
    return this.#refreshing;
  }

  async current(): Promise<readonly Switch[]> {
    const now = this.#now();
    if (now - this.#loadedAt < this.#ttlMs) return this.#value;
    // A read under way is shared only while what it answers would still be fresh: one
    // sent more than a ttl ago (a slow read, on a busy container) may have been sent
    // before a switch was set, and would let that switch go unobeyed past switchCacheMs.
    if (this.#loading !== undefined && now - this.#loadingSentAt < this.#ttlMs) return this.#loading;
    return this.#load();
  }

  #load(): Promise<readonly Switch[]> {
    const read = ++this.#reads;
    // What a read answers is as old as the moment it was sent: a slow read (DynamoDB
    // throttled, a cold connection) must not keep it for a whole ttl after it answers.
    const sentAt = this.#now();
    this.#loadingSentAt = sentAt;
    this.#lastSentAt = performance.now();
    const loading = this.#store
      .list()
      .then((value) => {
        // Reads may answer out of order: the cache keeps the latest sent.
        if (read > this.#kept) {
          this.#kept = read;
          this.#value = value;
          this.#loadedAt = sentAt;
        }
        return value;
      })
      .finally(() => {
        if (this.#loading === loading) this.#loading = undefined;
      });
    this.#loading = loading;
    return loading;
  }
}
