/**
 * Event streams (SPEC §3 Event streams): a stream record per (tenant, resource),
 * created by the first poll and refreshed by every poll (it expires when nobody
 * polls for the retention period), and the stream log the distributor appends to,
 * ordered by position, kept for the retention period.
 */
import { randomBytes } from 'node:crypto';
import { type DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { DeliveredEvent, GapMarker } from '../core/model.ts';
import { STREAM_CLOCKS_APART_MS, STREAM_SETTLE_MS } from '../core/stream-token.ts';
import { batchWrite, epochSeconds, isConditionFailure, names } from './dynamo.ts';
import { bumpSubscriptions } from './subscription-cache.ts';

const streamPk = (tenantId: string, resource: string) => `stream#${tenantId}#${resource}`;
const logPk = (tenantId: string, resource: string) => `slog#${tenantId}#${resource}`;
const KEY_ITEM = { pk: 'stream-token-key', sk: 'key' };

export interface StreamEntry {
  readonly position: string;
  readonly event: DeliveredEvent | GapMarker;
}

export class StreamStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #control: string;
  readonly #events: string;
  readonly #retentionMs: number;
  #key: Promise<Buffer> | undefined;

  constructor(options: { client: DynamoDBDocumentClient; controlTable: string; eventsTable: string; retentionDays: number }) {
    this.#client = options.client;
    this.#control = options.controlTable;
    this.#events = options.eventsTable;
    this.#retentionMs = options.retentionDays * 86_400_000;
  }

  /** The HMAC key for sync tokens, made once per deployment (the first caller's wins). */
  tokenKey(): Promise<Buffer> {
    this.#key ??= this.#loadKey().catch((error: unknown) => {
      this.#key = undefined;
      throw error;
    });
    return this.#key;
  }

  async #loadKey(): Promise<Buffer> {
    const existing = await this.#client.send(new GetCommand({ TableName: this.#control, Key: KEY_ITEM, ConsistentRead: true }));
    if (existing.Item) return Buffer.from(String(existing.Item.key), 'base64');
    const key = randomBytes(32).toString('base64');
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#control,
          Item: { ...KEY_ITEM, key },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
        }),
      );
      return Buffer.from(key, 'base64');
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      return this.#loadKey();
    }
  }

  /**
   * Records a poll: creates the stream if needed and pushes its expiry out, to the
   * retention period and the clocks' margin after the poll (the API takes a stream
   * for expired that margin before its record says: see `expired`). A
   * stream that is new, or was expired, bumps the tenant's subscriptions version
   * so that distributors stop using a cached "no stream here"; `announced` records
   * that the bump went through, so that a poll tried again after a bump that failed
   * bumps again rather than leave distributors skipping the stream for a minute.
   */
  async touch(tenantId: string, resource: string, now: number): Promise<void> {
    const key = { pk: streamPk(tenantId, resource), sk: 'stream' };
    const expiresAt = now + this.#retentionMs + STREAM_CLOCKS_APART_MS;
    const update = {
      TableName: this.#control,
      Key: key,
      UpdateExpression: 'SET #created_at = if_not_exists(#created_at, :now), #polled_at = :now, #expires_at_ms = :exp, #expires_at = :ttl',
      ExpressionAttributeNames: names('created_at', 'polled_at', 'expires_at_ms', 'expires_at'),
      ExpressionAttributeValues: { ':now': now, ':exp': expiresAt, ':ttl': epochSeconds(expiresAt) },
    };
    let announced = false;
    try {
      // The stream is alive: only its expiry moves. Not one within the clocks' margin of
      // its expiry: a distributor whose clock is ahead may have found it expired already,
      // and reads an expiry that had passed when read again only after a bump (and the
      // poll is answered 412, see `expired`).
      const alive = await this.#client.send(
        new UpdateCommand({
          ...update,
          ConditionExpression: '#expires_at_ms > :soon',
          ExpressionAttributeValues: { ...update.ExpressionAttributeValues, ':soon': now + STREAM_CLOCKS_APART_MS },
          ReturnValues: 'ALL_OLD',
        }),
      );
      announced = alive.Attributes?.announced === true;
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      // New, expired or about to: a new life, not announced yet (in the same write, so
      // that a failure below leaves it marked as such).
      await this.#client.send(
        new UpdateCommand({
          ...update,
          UpdateExpression: `${update.UpdateExpression}, #announced = :false`,
          ExpressionAttributeNames: { ...update.ExpressionAttributeNames, ...names('announced') },
          ExpressionAttributeValues: { ...update.ExpressionAttributeValues, ':false': false },
        }),
      );
    }
    if (announced) return;
    await bumpSubscriptions(this.#client, this.#control, tenantId);
    await this.#client.send(
      new UpdateCommand({
        TableName: this.#control,
        Key: key,
        UpdateExpression: 'SET #announced = :true',
        ExpressionAttributeNames: names('announced'),
        ExpressionAttributeValues: { ':true': true },
      }),
    );
  }

  /**
   * Whether the stream on this resource expired, as a poll must take it: a clocks' margin
   * before its record's expiry. A distributor whose clock is that much ahead finds it
   * expired then and appends none of its events: a poll answered 200 after that would
   * move the consumer's token past them. So such a poll starts the stream anew (412), as
   * `touch` does (a new life, announced to the distributors).
   */
  async expired(tenantId: string, resource: string, now: number): Promise<boolean> {
    return ((await this.streamExpiry(tenantId, resource)) ?? 0) <= now + STREAM_CLOCKS_APART_MS;
  }

  /** Whether someone polls a stream on this resource (and it has not expired), for a distributor. */
  async active(tenantId: string, resource: string, now: number): Promise<boolean> {
    return ((await this.streamExpiry(tenantId, resource)) ?? 0) > now;
  }

  /**
   * When the stream on this resource expires (epoch ms); undefined when there is none.
   * Strongly consistent: a consumer polls again at once after its first 412, and a
   * distributor reads the stream right after the bump that follows its creation; a
   * replica that has not seen the write yet would answer "no stream" (a second 412, or
   * events not appended, kept in the subscription cache for up to a minute).
   */
  async streamExpiry(tenantId: string, resource: string): Promise<number | undefined> {
    const result = await this.#client.send(
      new GetCommand({
        TableName: this.#control,
        Key: { pk: streamPk(tenantId, resource), sk: 'stream' },
        ConsistentRead: true,
        // The distributor may read only what it names (DISTRIBUTOR_CONTROL_ATTRIBUTES).
        ProjectionExpression: '#expires_at_ms',
        ExpressionAttributeNames: names('expires_at_ms'),
      }),
    );
    return result.Item === undefined ? undefined : Number(result.Item.expires_at_ms ?? 0);
  }

  /**
   * Appends to the stream log. Entries are kept for the retention period plus the
   * settle time: a token, whose position is that long before it was issued, is valid
   * for the whole retention period, and everything after its position must still be there.
   *
   * Reads leave an entry out from its expiry in ms, on the API's clock; DynamoDB's TTL
   * deletes it once the whole seconds of `expires_at` have passed, on AWS's clock. So
   * that second is rounded up, and taken that far (STREAM_CLOCKS_APART_MS) later: rounded
   * down, on a clock ahead, TTL could delete entries up to 3 s before their expiry, and a
   * token in its last seconds would be answered 200 without them.
   */
  async append(tenantId: string, resource: string, entries: readonly StreamEntry[], now: number): Promise<void> {
    const expiresAt = now + this.#retentionMs + STREAM_SETTLE_MS;
    const ttl = Math.ceil((expiresAt + STREAM_CLOCKS_APART_MS) / 1000);
    await batchWrite(
      this.#client,
      this.#events,
      entries.map((entry) => ({
        PutRequest: {
          Item: {
            pk: logPk(tenantId, resource),
            sk: entry.position,
            event: JSON.stringify(entry.event),
            expires_at_ms: expiresAt,
            expires_at: ttl,
          },
        },
      })),
    );
  }

  /**
   * Entries after `after` and at or before `until`, in order, at most `limit`. When
   * there are more, `resumeAfter` is where the next page starts: after the last entry
   * given, or after the last item read when DynamoDB cut the read short (1 MB a read).
   * That cut is the page's bound in bytes, and it is kept: 100 events of 64 KiB would be
   * a 6.6 MB page, past the 6 MB a Lambda function may answer (API Gateway's 502, in AWS
   * only), where a page of 1 MB stays within it even escaped again in Lambda's response.
   */
  async read(
    tenantId: string,
    resource: string,
    after: string,
    until: string,
    limit: number,
    now: number,
  ): Promise<{ entries: StreamEntry[]; more: boolean; resumeAfter: string | undefined }> {
    // A token from a clock a little ahead: nothing yet (and no reversed range to query).
    if (after >= until) return { entries: [], more: false, resumeAfter: undefined };
    const result = await this.#client.send(
      new QueryCommand({
        TableName: this.#events,
        KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :from AND :to',
        ExpressionAttributeNames: names('pk', 'sk'),
        ExpressionAttributeValues: { ':pk': logPk(tenantId, resource), ':from': `${after}\u0000`, ':to': `${until}\uffff` },
        ConsistentRead: true,
        Limit: limit + 1,
      }),
    );
    const entries = (result.Items ?? [])
      .filter((item) => Number(item.expires_at_ms ?? Number.POSITIVE_INFINITY) > now)
      .map((item) => ({ position: String(item.sk), event: JSON.parse(String(item.event)) }));
    if (entries.length > limit) return { entries: entries.slice(0, limit), more: true, resumeAfter: entries[limit - 1]?.position };
    if (result.LastEvaluatedKey) return { entries, more: true, resumeAfter: String(result.LastEvaluatedKey.sk) };
    return { entries, more: false, resumeAfter: undefined };
  }
}
