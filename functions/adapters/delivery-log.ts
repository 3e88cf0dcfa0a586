/**
 * What the delivery stage keeps of each delivery to a webhook, in the control table,
 * under the webhook and with the retention period as TTL (reads check expiry too):
 *
 * - attempts (`GET /v1/webhooks/{id}/attempts`), newest first;
 * - the delivery log: each delivery's events, for replay.
 */

import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import type { DeliveryMessage } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { isConditionFailure, names } from './dynamo.ts';
import { pad, WebhookItems } from './webhook-items.ts';

export interface AttemptRecord {
  readonly id: string;
  readonly delivery_id: string;
  readonly attempt: number;
  readonly status_code: number | null;
  readonly duration_ms: number;
  readonly error: string | null;
  readonly at: string;
}

// Partitions the delivery function's role may reach (TABLE_ACCESS.delivery).
const attemptsPk = (webhookId: string) => `${CONTROL_PK.attempts}${webhookId}`;
const logPk = (webhookId: string) => `${CONTROL_PK.deliveries}${webhookId}`;

export class DeliveryLog extends WebhookItems {
  async recordAttempt(webhookId: string, record: AttemptRecord, now: number): Promise<void> {
    await this.client.send(
      new PutCommand({
        TableName: this.table,
        Item: { pk: attemptsPk(webhookId), sk: `${pad(now)}#${record.id}`, ...record, ...this.expiry(now) },
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
    // Keys are the padded time the item was written: nothing before the retention period is
    // live, and a webhook with fewer live items than `limit` would have every page of its
    // expired ones (days of them, TTL lagging) read for nothing.
    const live = pad(this.liveSince(now));
    const from = options.fromSk !== undefined && options.fromSk > live ? options.fromSk : live;
    const pages = this.pages(
      {
        KeyConditionExpression: '#pk = :pk AND #sk >= :from',
        FilterExpression: '#expires_at_ms > :now',
        ExpressionAttributeNames: names('pk', 'expires_at_ms', 'sk', ...(projection ?? [])),
        ExpressionAttributeValues: { ':pk': pk, ':now': now, ':from': from },
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
  async add(message: DeliveryMessage, now: number, firstAttempt: AttemptRecord): Promise<void> {
    try {
      await this.client.send(
        new PutCommand({
          TableName: this.table,
          Item: {
            pk: logPk(message.webhookId),
            sk: `${pad(now)}#${message.deliveryId}`,
            ...firstAttempt,
            delivery_id: message.deliveryId,
            // Compressed: a delivery's events repeat most of their keys and values, and
            // DynamoDB bills this write (and the reads of the log) per KiB.
            events_z: deflateRawSync(JSON.stringify(message.events)),
            ...this.expiry(now),
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
    // Nothing logged before the retention period is live: a window from further back reads
    // from there, not through every page of what expired (TTL deletes days late). Nothing
    // is logged before 1970 either, and a padded negative time no longer sorts by time.
    const since = Math.max(window.since, this.liveSince(now));
    // A window that ends before that has nothing (it would be a reversed BETWEEN, which DynamoDB refuses).
    if (window.until <= since) return { deliveries: [], bytes: 0, more: false, nextAt: undefined };
    const deliveries: Array<DeliveryMessage['events']> = [];
    let bytes = 0;
    let nextAt: number | undefined;
    const pages = this.pages(
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
          ':from': pad(since),
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
}

/** A log item's events as JSON: compressed since the log was compressed, plain in items logged before. */
function loggedEventsText(item: Record<string, unknown>): string {
  const compressed = item.events_z as Uint8Array | undefined;
  return compressed ? inflateRawSync(compressed).toString('utf8') : String(item.events);
}
