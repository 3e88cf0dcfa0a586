/**
 * Webhooks, in the control table under their tenant, indexed by resource
 * (`by_resource`) so the distributor finds the subscriptions of a resource.
 */
import { randomBytes } from 'node:crypto';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  UpdateCommand,
  type UpdateCommandInput,
} from '@aws-sdk/lib-dynamodb';
import { ApiError } from '../core/errors.ts';
import { type Health, INITIAL_HEALTH, type LastFailure } from '../core/health.ts';
import { shardNumber } from '../core/keys.ts';
import type { Subscriber, Webhook, WebhookStatus } from '../core/model.ts';
import {
  BY_RESOURCE_INDEX,
  CHAIN_SHARD_PREFIX,
  CHAIN_SHARDS,
  CHAINS_INDEX,
  CONTROL_PK,
  TENANT_SK,
  tenantPk,
} from '../definitions/tables.ts';
import { applied, appliedOwn, isConditionFailure, names, queryPages, refusedOnRetry } from './dynamo.ts';
import { bumpSubscriptions } from './subscription-cache.ts';

const webhookSk = (id: string) => `webhook#${id}`;

/** A `by_chain` shard (0 to CHAIN_SHARDS - 1) as the index's partition key names it. */
export function chainShardKey(shard: number): string {
  return `${CHAIN_SHARD_PREFIX}${shard}`;
}

/** The `by_chain` shard a webhook is listed under, as the index's partition key names it. */
export function chainShard(webhookId: string): string {
  return chainShardKey(shardNumber(webhookId, CHAIN_SHARDS));
}
/** A count write's own token (see WebhookStore #count), or a notice claim's (see claimNotice). */
const newCountToken = () => randomBytes(9).toString('base64url');
const resourceKey = (tenantId: string, resource: string) => `${tenantId}#${resource}`;

function toHealth(raw: Record<string, unknown> | undefined): Health {
  if (!raw) return INITIAL_HEALTH;
  const n = (v: unknown) => (v === undefined || v === null ? undefined : Number(v));
  return {
    state: (raw.state as Health['state']) ?? 'healthy',
    consecutiveFailures: Number(raw.consecutive_failures ?? 0),
    lastSuccessAt: raw.last_success_at as string | undefined,
    lastFailure: raw.last_failure as LastFailure | undefined,
    quarantinedAt: n(raw.quarantined_at),
    probeIntervalSeconds: n(raw.probe_interval_s),
    nextProbeAt: n(raw.next_probe_at),
    disabledReason: raw.disabled_reason as string | undefined,
    troubleSince: n(raw.trouble_since),
    troubleProbeSeconds: n(raw.trouble_probe_s),
  };
}

function fromHealth(health: Health): Record<string, unknown> {
  return {
    state: health.state,
    consecutive_failures: health.consecutiveFailures,
    last_success_at: health.lastSuccessAt,
    last_failure: health.lastFailure,
    quarantined_at: health.quarantinedAt,
    probe_interval_s: health.probeIntervalSeconds,
    next_probe_at: health.nextProbeAt,
    disabled_reason: health.disabledReason,
    trouble_since: health.troubleSince,
    trouble_probe_s: health.troubleProbeSeconds,
  };
}

/**
 * When each replaced secret stops signing: a list, in the order of the secrets after
 * the first; a single number when written by an earlier version, which kept one.
 */
function previousExpiries(raw: unknown): number[] {
  if (raw === undefined || raw === null) return [];
  return (Array.isArray(raw) ? raw : [raw]).map(Number);
}

function toWebhook(item: Record<string, unknown>): Webhook {
  return {
    id: String(item.id),
    tenantId: String(item.tenant_id),
    resource: String(item.resource),
    url: String(item.url),
    types: (item.types as string[]) ?? [],
    description: String(item.description ?? ''),
    status: item.status as WebhookStatus,
    secrets: (item.secrets as string[]) ?? [],
    previousSecretsExpireAt: previousExpiries(item.previous_secret_expires_at),
    health: toHealth(item.health as Record<string, unknown> | undefined),
    healthVersion: Number(item.health_version ?? 0),
    heldCount: Number(item.held_count ?? 0),
    ...(item.held_since !== undefined && { heldSince: Number(item.held_since) }),
    ...(item.held_lost !== undefined && {
      heldLost: { count: Number(item.held_lost), sent: Number(item.held_lost_sent ?? 0), at: Number(item.held_lost_at ?? 0) },
    }),
    probeToken: item.probe_token as string | undefined,
    releaseToken: item.release_token as string | undefined,
    ...(item.release_at !== undefined && { releaseAt: Number(item.release_at) }),
    ...(item.release_not_before !== undefined && { releaseNotBefore: Number(item.release_not_before) }),
    ...(item.notice_pending === true && { noticePending: true }),
    ...(item.not_before !== undefined && { notBefore: Number(item.not_before) }),
    ...(item.slow_ms !== undefined && { slowMs: Number(item.slow_ms) }),
    ...(item.rate_per_second !== undefined && { ratePerSecond: Number(item.rate_per_second) }),
    createdAt: String(item.created_at),
    updatedAt: String(item.updated_at),
  };
}

/**
 * How long a claim on an owed disable notice lasts: longer than a delivery invocation
 * (30 s), in which the claimer publishes it, so that two never send it at once.
 */
export const NOTICE_CLAIM_MS = 60_000;

/**
 * How long a tenant's webhook count must go unwritten before it may be set right from
 * the webhooks stored: longer than a create takes from taking its place to storing its
 * webhook (at most the API's 29 s timeout).
 */
export const PLACES_SETTLE_MS = 60_000;

/** A webhook count set right: what it counted, and the webhooks stored. */
export interface PlacesRepaired {
  readonly counted: number;
  readonly stored: number;
}

export interface WebhookChanges {
  readonly status?: WebhookStatus;
  readonly url?: string;
  readonly types?: readonly string[];
  readonly description?: string;
  /** null: removed, back to the deployment's rate. */
  readonly ratePerSecond?: number | null;
}

/** What a deleted webhook's item counted as held: how many deliveries, and since when. */
export interface HeldCount {
  readonly count: number;
  readonly since?: number;
}

export class WebhookStore {
  readonly #reading = new Map<string, Promise<Webhook | undefined>>();
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  readonly #now: () => number;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string; now?: () => number }) {
    this.#client = options.client;
    this.#table = options.tableName;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Takes one of the tenant's webhook places. The counter on the tenant item goes
   * up conditionally, so concurrent creates cannot overshoot `maxWebhooks`; a
   * caller that then fails to store its webhook gives the place back.
   *
   * A place not given back (a give-back that failed) would be lost for good, so a
   * refusal first checks the count against the webhooks stored (`#repairPlaces`).
   */
  async reservePlace(tenantId: string, maxWebhooks: number): Promise<{ repaired?: PlacesRepaired }> {
    if (await this.#count(tenantId, 1, newCountToken(), maxWebhooks)) return {};
    const repaired = await this.#repairPlaces(tenantId);
    if (repaired && (await this.#count(tenantId, 1, newCountToken(), maxWebhooks))) return { repaired };
    throw new ApiError('limit_exceeded', `This tenant already has its limit of ${maxWebhooks} webhooks.`);
  }

  /**
   * Sets the tenant's webhook count to the webhooks stored, when it counts more and no
   * create or delete has written it for PLACES_SETTLE_MS: every create takes its place
   * (a count write) before it stores its webhook, within the API's timeout, so none is
   * then between the two, and the webhooks stored are all that should be counted. The
   * write is refused if the count was written meanwhile. What it set right, if it did.
   */
  async #repairPlaces(tenantId: string): Promise<PlacesRepaired | undefined> {
    const item = await this.#countState(tenantId);
    if (!item || this.#now() - Number(item.count_at ?? 0) < PLACES_SETTLE_MS) return undefined;
    // At most one check per PLACES_SETTLE_MS, claimed before the count (of concurrent
    // refusals, one counts): the count reads every webhook of the tenant whole (up to
    // 10,000 of up to 12 KB, 30,000 read units), and a refusal writes nothing, so a client
    // retrying its create at the limit (as fast as its throttle, 500 a second) counted
    // them all on every refusal, in the partition its deliveries and its key read.
    const checked = item.count_checked_at as number | undefined;
    if (checked !== undefined && this.#now() - Number(checked) < PLACES_SETTLE_MS) return undefined;
    const claimed = await this.#updateTenant(tenantId, {
      UpdateExpression: 'SET #count_checked_at = :now',
      // Never over a tenant deleted since the read: an update would make its item again.
      ConditionExpression: `attribute_exists(#pk) AND ${checked === undefined ? 'attribute_not_exists(#count_checked_at)' : '#count_checked_at = :checked'}`,
      ExpressionAttributeNames: names('pk', 'count_checked_at'),
      ExpressionAttributeValues: { ':now': this.#now(), ...(checked !== undefined && { ':checked': checked }) },
    });
    if (!claimed) return undefined;
    let stored = 0;
    for await (const page of queryPages(this.#client, {
      TableName: this.#table,
      KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :webhook)',
      ExpressionAttributeNames: names('pk', 'sk'),
      ExpressionAttributeValues: { ':pk': tenantPk(tenantId), ':webhook': webhookSk('') },
      ConsistentRead: true,
      Select: 'COUNT',
    })) {
      stored += page.Count ?? 0;
    }
    const counted = Number(item.webhook_count ?? 0);
    if (stored >= counted) return undefined;
    const seen = item.count_token as string | undefined;
    const set = await this.#updateTenant(tenantId, {
      UpdateExpression: 'SET #webhook_count = :stored, #count_token = :token, #count_at = :now',
      ConditionExpression: seen === undefined ? 'attribute_not_exists(#count_token)' : '#count_token = :seen',
      ExpressionAttributeNames: names('webhook_count', 'count_token', 'count_at'),
      ExpressionAttributeValues: {
        ':stored': stored,
        ':token': newCountToken(),
        ':now': this.#now(),
        ...(seen !== undefined && { ':seen': seen }),
      },
    });
    return set ? { counted, stored } : undefined;
  }

  /** A conditional update of the tenant's item: whether its condition let it apply. */
  #updateTenant(tenantId: string, input: Omit<UpdateCommandInput, 'TableName' | 'Key'>): Promise<boolean> {
    return applied(
      this.#client.send(new UpdateCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: TENANT_SK }, ...input })),
    );
  }

  /** Gives back a place reserved for a webhook that was not stored. */
  async releasePlace(tenantId: string): Promise<void> {
    await this.#count(tenantId, -1, newCountToken());
  }

  /** Stores a new webhook (its place already reserved). */
  async put(webhook: Webhook): Promise<void> {
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: {
            pk: tenantPk(webhook.tenantId),
            sk: webhookSk(webhook.id),
            gsi1pk: resourceKey(webhook.tenantId, webhook.resource),
            gsi1sk: webhook.id,
            id: webhook.id,
            tenant_id: webhook.tenantId,
            resource: webhook.resource,
            url: webhook.url,
            types: [...webhook.types],
            description: webhook.description,
            ...(webhook.ratePerSecond !== undefined && { rate_per_second: webhook.ratePerSecond }),
            status: webhook.status,
            secrets: [...webhook.secrets],
            health: fromHealth(webhook.health),
            health_version: 0,
            held_count: 0,
            created_at: webhook.createdAt,
            updated_at: webhook.updatedAt,
          },
          // Never over another webhook that has the same id.
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
        }),
      );
    } catch (error) {
      // Refused on a retry: the first try may have stored this very webhook, its answer
      // lost. If the stored one has our secret it is ours, and the caller, told it
      // failed, would neither have the secret it signs with nor keep its place.
      if (!refusedOnRetry(error) || (await this.#storedSecret(webhook)) !== webhook.secrets[0]) throw error;
    }
    await this.#bump(webhook.tenantId);
  }

  /** The first secret of the webhook stored under this one's id, if any. */
  async #storedSecret(webhook: Webhook): Promise<string | undefined> {
    const result = await this.#client.send(
      new GetCommand({
        TableName: this.#table,
        Key: { pk: tenantPk(webhook.tenantId), sk: webhookSk(webhook.id) },
        ConsistentRead: true,
        ProjectionExpression: '#secrets',
        ExpressionAttributeNames: names('secrets'),
      }),
    );
    return (result.Item?.secrets as string[] | undefined)?.[0];
  }

  /**
   * A conditional update of one webhook's item: whether its condition let it apply.
   * `mine`: an attribute the update sets to a token of its own; a refusal on the SDK's
   * second try that finds the token read back was the first try's doing (it applied, its
   * answer lost), and answers true (`appliedOwn`).
   */
  #updateIf(
    tenantId: string,
    id: string,
    input: Omit<UpdateCommandInput, 'TableName' | 'Key'>,
    mine?: { readonly attribute: string; readonly token: string },
  ): Promise<boolean> {
    const key = { pk: tenantPk(tenantId), sk: webhookSk(id) };
    const write = this.#client.send(new UpdateCommand({ TableName: this.#table, Key: key, ...input }));
    return mine === undefined ? applied(write) : appliedOwn(write, { client: this.#client, table: this.#table, key, ...mine });
  }

  /**
   * A conditional update of one webhook's item: the webhook as it left it, or undefined
   * when its condition refused it. `mine`: an attribute the update sets to a token of its
   * own, which its condition refuses where it already is; a refusal on the SDK's second
   * try that finds the token read back was the first try's doing (it applied, its answer
   * lost), and answers the webhook as it is.
   */
  async #updateAndRead(
    tenantId: string,
    id: string,
    input: Omit<UpdateCommandInput, 'TableName' | 'Key' | 'ReturnValues'>,
    mine?: { readonly attribute: string; readonly token: string },
  ) {
    const key = { pk: tenantPk(tenantId), sk: webhookSk(id) };
    try {
      const result = await this.#client.send(new UpdateCommand({ TableName: this.#table, Key: key, ...input, ReturnValues: 'ALL_NEW' }));
      return result.Attributes ? toWebhook(result.Attributes) : undefined;
    } catch (error) {
      if (mine !== undefined && refusedOnRetry(error)) {
        const found = await this.#client.send(new GetCommand({ TableName: this.#table, Key: key, ConsistentRead: true }));
        if (found.Item !== undefined && found.Item[mine.attribute] === mine.token) return toWebhook(found.Item);
      }
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }

  /**
   * After a write that changes what distributors look up: see SubscriptionCache. The
   * write it follows stands either way: should the bump fail, cached lookups age out
   * within their maxAgeMs (a minute), so it does not fail the request, which would
   * leave a webhook created (or deleted) that its caller was told failed.
   */
  async #bump(tenantId: string): Promise<void> {
    await bumpSubscriptions(this.#client, this.#table, tenantId).catch(() => undefined);
  }

  /**
   * Bumps the tenant's subscriptions version again once the `by_resource` index shows a
   * webhook's write (app/webhooks.ts `#untilIndexed`): lookups made between the write's
   * own bump and then are not used again. Its failure is outlived as `#bump`'s is.
   */
  async indexShows(tenantId: string): Promise<void> {
    await this.#bump(tenantId);
  }

  /**
   * A consistent read of one webhook. Reads of the same webhook that overlap in
   * time (the records of one delivery invocation) share one request.
   */
  get(tenantId: string, id: string): Promise<Webhook | undefined> {
    const key = `${tenantId}|${id}`;
    let pending = this.#reading.get(key);
    if (!pending) {
      pending = this.#client
        .send(new GetCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: webhookSk(id) }, ConsistentRead: true }))
        .then((result) => (result.Item ? toWebhook(result.Item) : undefined))
        .finally(() => this.#reading.delete(key));
      this.#reading.set(key, pending);
    }
    return pending;
  }

  /** All of a tenant's webhooks, page by page. */
  async list(tenantId: string): Promise<Webhook[]> {
    const webhooks: Webhook[] = [];
    for (let more = true; more; ) {
      const page = await this.page(tenantId, 1_000, webhooks.at(-1)?.id);
      webhooks.push(...page.webhooks);
      more = page.hasMore;
    }
    return webhooks;
  }

  /**
   * One page of a tenant's webhooks in id order: at most `limit`, after the webhook
   * `after` (which need not exist any more), and whether more follow.
   */
  async page(tenantId: string, limit: number, after?: string): Promise<{ webhooks: Webhook[]; hasMore: boolean }> {
    const items: Record<string, unknown>[] = [];
    // One more than the page, to know whether more follow; DynamoDB may stop short at 1 MB.
    const pages = queryPages(
      this.#client,
      {
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :prefix)',
        ExpressionAttributeNames: names('pk', 'sk'),
        ExpressionAttributeValues: { ':pk': tenantPk(tenantId), ':prefix': webhookSk('') },
        // A webhook stored just before is listed: a tenant's deletion must find one that
        // a create stored as it began (the create, reading the tenant after, finds it going).
        ConsistentRead: true,
        Limit: limit + 1,
      },
      { ...(after !== undefined && { startKey: { pk: tenantPk(tenantId), sk: webhookSk(after) } }), more: () => items.length <= limit },
    );
    for await (const result of pages) items.push(...(result.Items ?? []));
    return { webhooks: items.slice(0, limit).map(toWebhook), hasMore: items.length > limit };
  }

  /** The webhooks subscribed to one resource of one tenant. */
  /**
   * What the distributor needs of the webhooks subscribed to one resource of one tenant,
   * and no more (it may read nothing else: DISTRIBUTOR_CONTROL_ATTRIBUTES): not their
   * secrets, URLs or health.
   */
  async onResource(tenantId: string, resource: string): Promise<Subscriber[]> {
    const subscribers: Subscriber[] = [];
    const pages = queryPages(this.#client, {
      TableName: this.#table,
      IndexName: BY_RESOURCE_INDEX,
      KeyConditionExpression: '#gsi1pk = :key',
      ProjectionExpression: '#id, #tenant_id, #resource, #types, #status',
      ExpressionAttributeNames: names('gsi1pk', 'id', 'tenant_id', 'resource', 'types', 'status'),
      ExpressionAttributeValues: { ':key': resourceKey(tenantId, resource) },
    });
    for await (const result of pages) {
      for (const item of result.Items ?? []) {
        subscribers.push({
          id: String(item.id),
          tenantId: String(item.tenant_id),
          resource: String(item.resource),
          types: (item.types as string[]) ?? [],
          status: item.status as WebhookStatus,
        });
      }
    }
    return subscribers;
  }

  /**
   * Applies changes to an existing webhook; undefined when there is none. A new URL is
   * another endpoint: the Retry-After the old one asked for (`not_before`) goes, and so
   * does its slow answer time (`slow_ms`).
   */
  async update(tenantId: string, id: string, changes: WebhookChanges, now: string): Promise<Webhook | undefined> {
    const values: Record<string, unknown> = { ':now': now };
    const sets = ['#updated_at = :now'];
    const attributeNames = ['updated_at', 'pk'];
    const removed: string[] = [];
    const { ratePerSecond, ...fields } = changes;
    const attributes = { ...fields, ...(ratePerSecond !== undefined && { rate_per_second: ratePerSecond }) };
    for (const [field, value] of Object.entries(attributes)) {
      if (value === undefined) continue;
      attributeNames.push(field);
      if (value === null) {
        removed.push(`#${field}`);
        continue;
      }
      sets.push(`#${field} = :${field}`);
      values[`:${field}`] = value;
    }
    if (changes.url !== undefined) {
      removed.push('#not_before', '#slow_ms');
      attributeNames.push('not_before', 'slow_ms');
    }
    const removes = removed.length > 0 ? ` REMOVE ${removed.join(', ')}` : '';
    const updated = await this.#updateAndRead(tenantId, id, {
      UpdateExpression: `SET ${sets.join(', ')}${removes}`,
      ConditionExpression: 'attribute_exists(#pk)',
      ExpressionAttributeNames: names(...attributeNames),
      ExpressionAttributeValues: values,
    });
    if (updated) await this.#bump(tenantId);
    return updated;
  }

  /**
   * Deletes a webhook, then tells the distributors (the subscriptions version, whose
   * failure `#bump` outlives) and gives its place back. Answers false when there was
   * none, otherwise what its item counted as held (`undefined` where a retry found it
   * gone, its first try's answer lost). Once the item is deleted the webhook is gone
   * whatever follows: given `placeKept`, a failure to give the place back is handed to
   * it, not thrown (a caller answering 500 would be tried again into a 404).
   */
  async delete(tenantId: string, id: string, placeKept?: (error: unknown) => void): Promise<false | { held: HeldCount | undefined }> {
    // The count is marked written before the webhook goes: from then until its place is
    // given back, the webhooks stored are one fewer than the count, rightly, and a create
    // finding the count full must not take that for a place lost (see `#repairPlaces`).
    await this.#updateTenant(tenantId, {
      UpdateExpression: 'SET #count_token = :token, #count_at = :now',
      ConditionExpression: 'attribute_exists(#pk)',
      ExpressionAttributeNames: names('count_token', 'count_at', 'pk'),
      ExpressionAttributeValues: { ':token': newCountToken(), ':now': this.#now() },
    });
    let held: HeldCount | undefined;
    try {
      const { Attributes: old } = await this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: { pk: tenantPk(tenantId), sk: webhookSk(id) },
          // Of concurrent deletes, one gives the place back.
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
          ReturnValues: 'ALL_OLD',
        }),
      );
      if (old) {
        held = {
          count: Number(old.held_count ?? 0),
          ...(old.held_since !== undefined && { since: Number(old.held_since) }),
        };
      }
    } catch (error) {
      // Refused on a retry: the webhook is gone, most likely by this delete's own first
      // try, its answer lost. It is counted as deleted here: answered 404 it would keep
      // its place for good. Should another delete have taken it, both give the place
      // back with the same token (the webhook's), so the count goes down once while no
      // other count write came between. (A delete of a webhook gone long before, whose
      // first try did not apply, is miscounted: rarer than the lost answer it covers.)
      if (!refusedOnRetry(error)) {
        if (isConditionFailure(error)) return false;
        throw error;
      }
    }
    await this.#bump(tenantId);
    const givenBack = this.#count(tenantId, -1, `deleted:${id}`);
    await (placeKept ? givenBack.catch(placeKept) : givenBack);
    return { held };
  }

  /**
   * Adds `delta` to the tenant's webhook count; false when `max` (for a +1) refused it.
   * The write leaves its `token` on the tenant item and is refused when that token is
   * already there: should the SDK try it again after a first try that applied but whose
   * answer was lost, the second try is refused (the place not counted twice) and the
   * token, read back, tells that the refusal was of our own write, which applied (the
   * place not refused, or given back, wrongly). Only the last count write's token is
   * kept: one of another request landing between our lost answer and the read back
   * hides ours (as rare as a concurrent create or delete of the same tenant within the
   * SDK's retry delay), and the call then fails as refused.
   */
  async #count(tenantId: string, delta: 1 | -1, token: string, max?: number): Promise<boolean> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: tenantPk(tenantId), sk: TENANT_SK },
          UpdateExpression: 'SET #count_token = :token, #count_at = :now ADD #webhook_count :delta',
          // Within the cap after a +1, so concurrent creates cannot overshoot it.
          ConditionExpression: `attribute_exists(#pk) AND (attribute_not_exists(#count_token) OR #count_token <> :token)${
            max === undefined ? '' : ' AND #webhook_count < :max'
          }`,
          ExpressionAttributeNames: names('webhook_count', 'count_token', 'count_at', 'pk'),
          ExpressionAttributeValues: { ':delta': delta, ':token': token, ':now': this.#now(), ...(max !== undefined && { ':max': max }) },
        }),
      );
      return true;
    } catch (error) {
      if (refusedOnRetry(error) && (await this.#countState(tenantId))?.count_token === token) return true;
      if (isConditionFailure(error) && max !== undefined) return false;
      throw error;
    }
  }

  /**
   * The tenant's webhook count as its last write left it: the count, that write's token,
   * when it was, and when the count was last checked against the webhooks stored
   * (strongly consistent).
   */
  async #countState(tenantId: string): Promise<Record<string, unknown> | undefined> {
    const result = await this.#client.send(
      new GetCommand({
        TableName: this.#table,
        Key: { pk: tenantPk(tenantId), sk: TENANT_SK },
        ConsistentRead: true,
        ProjectionExpression: '#webhook_count, #count_token, #count_at, #count_checked_at',
        ExpressionAttributeNames: names('webhook_count', 'count_token', 'count_at', 'count_checked_at'),
      }),
    );
    return result.Item;
  }

  /**
   * Saves a health transition. The version check makes concurrent delivery
   * functions apply transitions one at a time: a writer that lost the race gets
   * false, reads again and re-applies its event to the newer health. `url`: only while
   * the webhook still has this URL (the one an attempt's answer came from).
   */
  async saveHealth(
    webhook: Webhook,
    health: Health,
    extra: {
      status?: WebhookStatus;
      probeToken?: string | null;
      releaseToken?: string | null;
      releaseAt?: number;
      releaseNotBefore?: number | null;
      noticePending?: true | null;
      url?: string;
      /** With `status`: when it changed (ISO 8601), the webhook's `updated_at`. */
      updatedAt?: string;
    } = {},
  ): Promise<boolean> {
    // A token of this write's own: see the refusal below.
    const token = newCountToken();
    const sets = ['#health = :health', '#health_version = :next', '#health_token = :health_token'];
    const removes: string[] = [];
    const values: Record<string, unknown> = {
      ':health': JSON.parse(JSON.stringify(fromHealth(health))),
      ':next': webhook.healthVersion + 1,
      ':version': webhook.healthVersion,
      ':health_token': token,
    };
    const attributeNames = ['health', 'health_version', 'health_token', 'pk'];
    if (extra.url !== undefined) {
      values[':url'] = extra.url;
      attributeNames.push('url');
    }
    if (extra.status !== undefined) {
      sets.push('#status = :status');
      values[':status'] = extra.status;
      attributeNames.push('status');
      if (extra.updatedAt !== undefined) {
        sets.push('#updated_at = :updated_at');
        values[':updated_at'] = extra.updatedAt;
        attributeNames.push('updated_at');
      }
    }
    // A chain started, or a notice owed, lists the webhook in `by_chain`, where the
    // reconciler finds it and has it checked for a lost chain (app/delivery/chains.ts `check`), so
    // a chain whose message was lost (a purged deliver queue, a send that failed after
    // this write) is started again though no delivery comes. In the same write, so that
    // nothing has a chain and is not listed; an unlist (`unlistUnwatched`) is refused
    // while a chain or a notice is there. Also a write that leaves a chain or a notice
    // the webhook had, as read: one started before the version with `by_chain`, which is
    // listed by no start, is so listed by its next health write (each probe's), where it
    // waited for the next chain's start, and a lost probe chain of a webhook quarantined
    // at the upgrade was never started again.
    const starts = [extra.probeToken, extra.releaseToken, extra.noticePending].some((value) => value !== undefined && value !== null);
    const keeps =
      (webhook.noticePending === true && extra.noticePending === undefined) ||
      ((extra.status ?? webhook.status) === 'active' &&
        ((webhook.probeToken !== undefined && extra.probeToken === undefined) ||
          (webhook.releaseToken !== undefined && extra.releaseToken === undefined)));
    if (starts || keeps) {
      sets.push('#chain_shard = :chain_shard', '#chain_sk = :chain_sk');
      values[':chain_shard'] = chainShard(webhook.id);
      values[':chain_sk'] = webhook.id;
      attributeNames.push('chain_shard', 'chain_sk');
    }
    for (const [field, attribute] of [
      ['probeToken', 'probe_token'],
      ['releaseToken', 'release_token'],
      ['noticePending', 'notice_pending'],
      ['releaseAt', 'release_at'],
      ['releaseNotBefore', 'release_not_before'],
    ] as const) {
      const value = extra[field];
      if (value === undefined) continue;
      attributeNames.push(attribute);
      if (value === null) removes.push(`#${attribute}`);
      else {
        sets.push(`#${attribute} = :${attribute}`);
        values[`:${attribute}`] = value;
      }
    }
    // A notice owed anew, or no longer owed, starts with no claim on it.
    if (extra.noticePending !== undefined) {
      removes.push('#notice_claimed_until', '#notice_claim');
      attributeNames.push('notice_claimed_until', 'notice_claim');
    }
    // Refused on the SDK's second try, by the version its first try moved (it applied,
    // its answer lost), the write is still this caller's if the token read back is this
    // write's: taken for another writer's, the caller would apply its event again on top
    // of its own (a failure counted twice) and, finding the transition made, never act
    // on it (no probe sent on entering quarantine, no release on leaving it, no disable
    // notice).
    const saved = await this.#updateIf(
      webhook.tenantId,
      webhook.id,
      {
        UpdateExpression: `SET ${sets.join(', ')}${removes.length > 0 ? ` REMOVE ${removes.join(', ')}` : ''}`,
        ConditionExpression: `attribute_exists(#pk) AND (attribute_not_exists(#health_version) OR #health_version = :version)${
          extra.url === undefined ? '' : ' AND #url = :url'
        }`,
        ExpressionAttributeNames: names(...attributeNames),
        ExpressionAttributeValues: values,
      },
      { attribute: 'health_token', token },
    );
    if (!saved) return false;
    if (extra.status !== undefined && extra.status !== webhook.status) await this.#bump(webhook.tenantId);
    return true;
  }

  /**
   * Takes a webhook off `by_chain` once nothing there is to watch: it owes no notice, and
   * it is not active or has no chain (a chain that ended, a disabled webhook's). Refused,
   * false, where a chain started or a notice came owed since it was read: their writes
   * list it again, so whichever comes last, a webhook with a chain stays listed.
   */
  async unlistUnwatched(tenantId: string, id: string): Promise<boolean> {
    return this.#updateIf(tenantId, id, {
      UpdateExpression: 'REMOVE #chain_shard, #chain_sk',
      ConditionExpression:
        'attribute_exists(#chain_shard) AND attribute_not_exists(#notice_pending) AND ' +
        '(#status <> :active OR (attribute_not_exists(#probe_token) AND attribute_not_exists(#release_token)))',
      ExpressionAttributeNames: names('chain_shard', 'chain_sk', 'notice_pending', 'status', 'probe_token', 'release_token'),
      ExpressionAttributeValues: { ':active': 'active' },
    });
  }

  /**
   * A step of the release chain carrying `token` is running: notes when, so that a
   * chain that was lost can be told from one that waits. False when another chain
   * (a newer token) has taken over: this one must stop.
   */
  async markReleaseStep(
    tenantId: string,
    id: string,
    token: string,
    now: number,
    follows?: { readonly after: number; readonly endedBy: number },
  ): Promise<boolean> {
    // Listed in `by_chain` too, as its start listed it (see `saveHealth`): a chain started
    // before the version with the index is so listed by its next step. The same keys
    // again change nothing in the index.
    // `follows`: not beside another step of the chain that may still be sending (begun
    // after `endedBy`), unless that is the step this one follows (`after`, the time it
    // wrote) or this call's own first try, whose answer was lost (its token, `release_by`).
    // Of two copies of one step message received at once, one steps. A step that failed
    // and comes back after the visibility timeout steps again, as it must.
    const alone = follows === undefined ? '' : ' AND (#release_at = :after OR #release_by = :me OR #release_at <= :ended_by)';
    return this.#updateIf(tenantId, id, {
      UpdateExpression: 'SET #release_at = :now, #release_by = :me, #chain_shard = :chain_shard, #chain_sk = :chain_sk',
      ConditionExpression: `#release_token = :token${alone}`,
      ExpressionAttributeNames: names('release_at', 'release_by', 'release_token', 'chain_shard', 'chain_sk'),
      ExpressionAttributeValues: {
        ':now': now,
        ':me': newCountToken(),
        ':token': token,
        ':chain_shard': chainShard(id),
        ':chain_sk': id,
        ...(follows !== undefined && { ':after': follows.after, ':ended_by': follows.endedBy }),
      },
    });
  }

  /**
   * A release chain ended (nothing held, no gap marker owed): its token is removed,
   * only while it is still this chain's, so a recheck can tell that no step of it is
   * still sending (see app/delivery/chains.ts `recheck`). Refused too while a delivery is counted
   * as held: one counted after the step looked must not be left with no chain (see
   * `countHeld`). False when refused.
   */
  async endRelease(tenantId: string, id: string, token: string): Promise<boolean> {
    return this.#updateIf(tenantId, id, {
      // Nothing is held: the next hold notes when holding began again (`noteHeldSince`).
      UpdateExpression: 'REMOVE #release_token, #release_not_before, #held_since',
      ConditionExpression: '#release_token = :token AND (attribute_not_exists(#held_count) OR #held_count <= :none)',
      ExpressionAttributeNames: names('release_token', 'release_not_before', 'held_count', 'held_since'),
      ExpressionAttributeValues: { ':token': token, ':none': 0 },
    });
  }

  /**
   * Takes the owed disable notice to send it, for NOTICE_CLAIM_MS: answers the claim
   * (its own token) and the webhook as the claim left it, for one caller at a time, and
   * only while the webhook is still disabled (one re-enabled meanwhile owes nothing).
   * The notice stays owed until `noticeSent`: a sender that dies before it lets the
   * claim run out, and a later delivery or probe sends the notice again.
   */
  async claimNotice(tenantId: string, id: string, now: number): Promise<{ claim: string; webhook: Webhook } | undefined> {
    const claim = newCountToken();
    // A claim whose answer was lost is ours (refused on the retry by its own claimed_until):
    // taken for another sender's, nobody would send the notice (that sender's message
    // would not come back for it).
    const webhook = await this.#updateAndRead(
      tenantId,
      id,
      {
        UpdateExpression: 'SET #notice_claimed_until = :until, #notice_claim = :claim',
        ConditionExpression:
          'attribute_exists(#notice_pending) AND #status = :disabled AND (attribute_not_exists(#notice_claimed_until) OR #notice_claimed_until < :now)',
        ExpressionAttributeNames: names('notice_pending', 'notice_claimed_until', 'notice_claim', 'status'),
        ExpressionAttributeValues: { ':disabled': 'disabled', ':until': now + NOTICE_CLAIM_MS, ':now': now, ':claim': claim },
      },
      { attribute: 'notice_claim', token: claim },
    );
    return webhook ? { claim, webhook } : undefined;
  }

  /**
   * The notice claimed by `claim` went out: nothing is owed. Only under that claim: the
   * webhook may have been enabled and disabled again since (a claim runs a minute), and
   * the notice that disable owes must not pass for sent.
   */
  async noticeSent(tenantId: string, id: string, claim: string): Promise<void> {
    await this.#updateIf(tenantId, id, {
      UpdateExpression: 'REMOVE #notice_pending, #notice_claimed_until, #notice_claim',
      ConditionExpression: '#notice_claim = :claim',
      ExpressionAttributeNames: names('notice_pending', 'notice_claimed_until', 'notice_claim'),
      ExpressionAttributeValues: { ':claim': claim },
    });
  }

  /**
   * The notice claimed by `claim` could not be sent: the claim goes, and the next
   * delivery or probe tries again. Only that claim: another sender's stays its own.
   */
  async oweNoticeAgain(tenantId: string, id: string, claim: string): Promise<void> {
    await this.#updateIf(tenantId, id, {
      UpdateExpression: 'REMOVE #notice_claimed_until, #notice_claim',
      ConditionExpression: '#notice_claim = :claim',
      ExpressionAttributeNames: names('notice_claimed_until', 'notice_claim'),
      ExpressionAttributeValues: { ':claim': claim },
    });
  }

  /**
   * Moves the held count by `delta` without a cap: deliveries that left the held store,
   * or a count given back. Counting deliveries in goes through `countHeld`, within the cap.
   */
  async adjustHeld(tenantId: string, id: string, delta: number): Promise<boolean> {
    return (await this.#moveHeld(tenantId, id, delta)) !== undefined;
  }

  /**
   * Counts `n` deliveries into the held store within `cap`, and answers the webhook as
   * this write left it (undefined when the cap refused it, or the webhook is gone). Its
   * release token is read in the same write that counts: of a chain ending (`endRelease`,
   * refused while anything is counted) and this count, whichever comes second sees the
   * other, so a delivery counted as held is never left without a chain to release it.
   */
  countHeld(tenantId: string, id: string, n: number, cap: number): Promise<Webhook | undefined> {
    // Within the cap after the change, so concurrent holders cannot overshoot it: the count is at most cap - n before it.
    return this.#moveHeld(tenantId, id, n, { condition: '(attribute_not_exists(#held_count) OR #held_count <= :limit)', limit: cap - n });
  }

  /**
   * Notes when the webhook began to hold (`Webhook.heldSince`): `before` a hold's count,
   * while nothing is counted, or after a `countHeld` that found nothing counted. Not if a
   * time is noted already (one left by a count that came back to nothing without its
   * release ending, or by a note whose count never came, keeps the earlier time, which
   * judges what is held since as older than it is: a drifted count told as a retention
   * loss, never a loss told as drift). A write of its own, not part of the count's: the
   * count cannot tell in the same write whether it started from nothing, and a time set by
   * a hold on a webhook holding older deliveries (counted before this was kept) would pass
   * those off as young.
   *
   * Before the count, so that a function that dies between the count and the note (SQS
   * then hands the delivery back, and it is counted again: a count that did not start
   * from nothing notes no time) does not leave the webhook holding with no time noted,
   * its drifted count told as deliveries TTL removed: a `retention` gap marker for a loss
   * that never was, and a page. After it as well, for a hold that read the webhook
   * holding and found it emptied by the time it counted.
   */
  async noteHeldSince(tenantId: string, id: string, since: number, options: { readonly before?: boolean } = {}): Promise<void> {
    await this.#updateIf(tenantId, id, {
      UpdateExpression: 'SET #held_since = :since',
      // Before the count: only on a webhook that exists (an update would make one) and counts nothing.
      ConditionExpression: options.before
        ? 'attribute_exists(#pk) AND attribute_not_exists(#held_since) AND (attribute_not_exists(#held_count) OR #held_count <= :none)'
        : 'attribute_not_exists(#held_since) AND #held_count > :none',
      ExpressionAttributeNames: names('held_since', 'held_count', ...(options.before ? ['pk'] : [])),
      ExpressionAttributeValues: { ':since': since, ':none': 0 },
    });
  }

  /**
   * Moves the held count by `delta` (within `cap`'s condition, if given), and answers the
   * webhook as the write left it; undefined when refused. An ADD is not idempotent, and
   * the SDK sends a write again when its first try's answer is lost, even if that try
   * applied: so the write leaves a token of its own on the item and is refused where that
   * token already is. A refusal on a retry whose token is read back was the first try's
   * doing, which applied. Without it the count drifted for good: up (a delivery counted
   * twice, whose release then found the count never emptied: every new delivery held
   * behind nothing, and a gap marker telling the subscriber of a loss that never was) or
   * down (below what is held, where nothing sets it right, and a chain may end with
   * deliveries still held). Only the last write's token is kept: another hold or release
   * landing between the lost answer and the retry hides it, and the retry applies again
   * (rarer by far: the SDK tries again within a few hundred milliseconds).
   */
  async #moveHeld(
    tenantId: string,
    id: string,
    delta: number,
    cap?: { readonly condition: string; readonly limit: number },
  ): Promise<Webhook | undefined> {
    const token = newCountToken();
    return this.#updateAndRead(
      tenantId,
      id,
      {
        UpdateExpression: 'SET #held_token = :token ADD #held_count :delta',
        ConditionExpression: `attribute_exists(#pk) AND (attribute_not_exists(#held_token) OR #held_token <> :token)${
          cap === undefined ? '' : ` AND ${cap.condition}`
        }`,
        ExpressionAttributeNames: names('held_count', 'held_token', 'pk'),
        ExpressionAttributeValues: { ':delta': delta, ':token': token, ...(cap !== undefined && { ':limit': cap.limit }) },
      },
      { attribute: 'held_token', token },
    );
  }

  /**
   * Keeps how long the endpoint at `url` takes to answer while it is slow. Only while the
   * webhook still has that URL: an answer from the old URL that comes back after a `PATCH`
   * of it says nothing of the new one.
   */
  async noteSlowAnswers(tenantId: string, id: string, url: string, slowMs: number): Promise<void> {
    await this.#updateIf(tenantId, id, {
      UpdateExpression: 'SET #slow_ms = :ms',
      ConditionExpression: 'attribute_exists(#pk) AND #url = :url',
      ExpressionAttributeNames: names('slow_ms', 'pk', 'url'),
      ExpressionAttributeValues: { ':url': url, ':ms': slowMs },
    });
  }

  /**
   * Forgets the slow answer time kept for the endpoint at `url`, after a quick answer to a
   * POST sent when it was `seenMs`: whether this call forgot it, and so gives the
   * endpoint's time back (`PaceStore.giveBack`). Not for an old URL's answer after
   * a `PATCH`; nor a second time, for another quick answer to a POST sent as slowly (its
   * time given back again would be taken from the deliveries that took the whole rate
   * since); nor a slower time noted since by another POST, which the endpoint has still.
   *
   * It leaves a token of its own (`slow_forgotten`): refused on the SDK's second try by its
   * own first (it applied, its answer lost), it is still the write that forgot, read back
   * by the token. Taken for another's, the time would never be given back: no later
   * answer finds a slowness to forget, and the endpoint, quick again, would have its new
   * deliveries wait behind the slow backlog's shares, days of it for a long-slow one.
   */
  forgetSlowAnswers(tenantId: string, id: string, url: string, seenMs: number): Promise<boolean> {
    const token = newCountToken();
    return this.#updateIf(
      tenantId,
      id,
      {
        UpdateExpression: 'SET #slow_forgotten = :token REMOVE #slow_ms',
        ConditionExpression: 'attribute_exists(#pk) AND #url = :url AND #slow_ms <= :seen',
        ExpressionAttributeNames: names('slow_forgotten', 'slow_ms', 'pk', 'url'),
        ExpressionAttributeValues: { ':url': url, ':seen': seenMs, ':token': token },
      },
      { attribute: 'slow_forgotten', token },
    );
  }

  /**
   * The endpoint at `url` has left a POST unanswered for `waitedMs`: it is at least that
   * slow. Raises the slow answer time kept, never lowers it (several POSTs waiting at once
   * each note their own wait), and only while the webhook still has that URL. Whether it
   * was raised.
   */
  noteUnanswered(tenantId: string, id: string, url: string, waitedMs: number): Promise<boolean> {
    return this.#updateIf(tenantId, id, {
      UpdateExpression: 'SET #slow_ms = :ms',
      ConditionExpression: 'attribute_exists(#pk) AND #url = :url AND (attribute_not_exists(#slow_ms) OR #slow_ms < :ms)',
      ExpressionAttributeNames: names('slow_ms', 'pk', 'url'),
      ExpressionAttributeValues: { ':url': url, ':ms': waitedMs },
    });
  }

  /** Leaves the endpoint alone until `until` (epoch ms), unless it already is for longer. */
  async leaveAloneUntil(tenantId: string, id: string, until: number, url: string): Promise<void> {
    await this.#updateIf(tenantId, id, {
      UpdateExpression: 'SET #not_before = :until',
      // Only the URL that asked: a webhook moved to another meanwhile is another endpoint.
      ConditionExpression: 'attribute_exists(#pk) AND #url = :url AND (attribute_not_exists(#not_before) OR #not_before < :until)',
      ExpressionAttributeNames: names('not_before', 'pk', 'url'),
      ExpressionAttributeValues: { ':until': until, ':url': url },
    });
  }

  /**
   * Sets the held count to what is really held (`actual`), if it is still the drifted
   * value that was seen. What it counted beyond that is added to the held deliveries
   * lost (`heldLost`) in the same write, so that of concurrent callers one counts them,
   * and none can set the count without noting the loss; not with `noteLost` false, for a
   * count that went above what is held with nothing lost (app/delivery/release.ts
   * `dropLostHeld`). Set to nothing, it forgets when holding began (`noteHeldSince`).
   */
  async resetHeld(tenantId: string, id: string, seen: number, actual: number, now: number, noteLost = true): Promise<boolean> {
    const lost = noteLost ? seen - actual : 0;
    // Nothing held: the next hold notes when holding began again (`noteHeldSince`).
    const since = actual <= 0 ? ' REMOVE #held_since' : '';
    const token = newCountToken();
    // With a token of its own (as each change of the count has, see `#moveHeld`): a reset
    // whose answer was lost is refused on the SDK's second try by the count it set, and is
    // still this caller's to count, or the loss it noted would be counted by no one.
    const reset = await this.#updateAndRead(
      tenantId,
      id,
      {
        UpdateExpression: `SET #held_count = :actual, #held_token = :token${lost > 0 ? ', #held_lost_at = :now ADD #held_lost :lost' : ''}${since}`,
        ConditionExpression: '#held_count = :seen',
        ExpressionAttributeNames: names(
          'held_count',
          'held_token',
          ...(lost > 0 ? ['held_lost', 'held_lost_at'] : []),
          ...(since ? ['held_since'] : []),
        ),
        ExpressionAttributeValues: { ':actual': actual, ':seen': seen, ':token': token, ...(lost > 0 && { ':lost': lost, ':now': now }) },
      },
      { attribute: 'held_token', token },
    );
    return reset !== undefined;
  }

  /**
   * A gap marker for the held deliveries lost up to `count` was sent. Never moved back
   * (a step that ran twice may have noted more).
   */
  async heldLostSent(tenantId: string, id: string, count: number): Promise<void> {
    await this.#updateIf(tenantId, id, {
      UpdateExpression: 'SET #held_lost_sent = :count',
      ConditionExpression: 'attribute_exists(#pk) AND (attribute_not_exists(#held_lost_sent) OR #held_lost_sent < :count)',
      ExpressionAttributeNames: names('held_lost_sent', 'pk'),
      ExpressionAttributeValues: { ':count': count },
    });
  }

  /**
   * Puts a new secret first; the `previous` ones keep signing, each until its
   * `expiresAt`. False when another rotation replaced the secret this one read.
   */
  async rotateSecret(
    webhook: Webhook,
    secret: string,
    previous: ReadonlyArray<{ readonly secret: string; readonly expiresAt: number }>,
    now: string,
  ): Promise<boolean> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: tenantPk(webhook.tenantId), sk: webhookSk(webhook.id) },
          UpdateExpression: 'SET #secrets = :secrets, #previous_secret_expires_at = :expires, #updated_at = :now',
          // Two rotations at once: only one may replace the secret list it read.
          ConditionExpression: 'attribute_exists(#pk) AND #secrets[0] = :current',
          ExpressionAttributeNames: names('secrets', 'previous_secret_expires_at', 'updated_at', 'pk'),
          ExpressionAttributeValues: {
            ':secrets': [secret, ...previous.map((p) => p.secret)],
            ':expires': previous.map((p) => p.expiresAt),
            ':now': now,
            ':current': webhook.secrets[0],
          },
        }),
      );
      return true;
    } catch (error) {
      // Refused on a retry: the first try may have applied, its answer lost. If the stored
      // secret is ours it did, and is answered so: rotating again would answer another
      // secret, or 409 with the webhook rotated and the caller holding none of its secrets.
      if (refusedOnRetry(error) && (await this.#storedSecret(webhook)) === secret) return true;
      if (isConditionFailure(error)) return false;
      throw error;
    }
  }
}

/** A webhook `by_chain` lists: the reconciler has each checked for a lost chain (app/delivery/chains.ts `check`). */
export interface WatchedWebhook {
  readonly tenantId: string;
  readonly webhookId: string;
}

/**
 * The reconciler's view of `by_chain`: the keys of the webhooks one shard lists, nothing
 * else (the index holds keys only, so not a webhook's URL or secrets).
 */
export class WatchedWebhooks {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  /** The webhooks listed under `shard` (0 to CHAIN_SHARDS - 1), read to the end. */
  async list(shard: number): Promise<WatchedWebhook[]> {
    const found: WatchedWebhook[] = [];
    for await (const page of queryPages(this.#client, {
      TableName: this.#table,
      IndexName: CHAINS_INDEX,
      KeyConditionExpression: '#chain_shard = :shard',
      ExpressionAttributeNames: names('chain_shard'),
      ExpressionAttributeValues: { ':shard': chainShardKey(shard) },
    })) {
      for (const item of page.Items ?? []) {
        const pk = String(item.pk);
        const sk = String(item.sk);
        if (!pk.startsWith(CONTROL_PK.tenant) || !sk.startsWith(webhookSk(''))) continue;
        found.push({ tenantId: pk.slice(CONTROL_PK.tenant.length), webhookId: sk.slice(webhookSk('').length) });
      }
    }
    return found;
  }
}
