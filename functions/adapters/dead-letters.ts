/**
 * Dead letters: deliveries past the retry budget, kept in the control table under their
 * webhook, with the retention period as TTL (reads check expiry too).
 */

import { randomUUID } from 'node:crypto';
import { DeleteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { DeliveryMessage } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { applied, appliedOwn, epochSeconds, names } from './dynamo.ts';
import { pad, WebhookItems } from './webhook-items.ts';

/** A dead letter as a page gives it: `replayedAt` when a replay's delivery wrote it (see `DeadLetters.add`). */
export interface DeadLetter {
  readonly sk: string;
  readonly reason: string;
  readonly message: DeliveryMessage;
  readonly replayedAt: number | undefined;
}

// A partition the delivery function's role may reach (TABLE_ACCESS.delivery).
const deadPk = (webhookId: string) => `${CONTROL_PK.dead}${webhookId}`;
// Apart from the letters' partition, which a page reads whole.
const replayHoldKey = (webhookId: string) => ({ pk: `${deadPk(webhookId)}#replaying`, sk: 'replaying' });

/**
 * The longest one replay holds a webhook's dead letters (`holdForReplay`): past the API's
 * 29 s, in which it sends and removes them, so that one that died lets the next in after.
 */
export const REPLAY_HOLD_MS = 60_000;

/** When a delivery's oldest event was accepted (epoch ms; 0 when none says). */
function acceptedAt(message: DeliveryMessage): number {
  const times = message.events.map((e) => Date.parse(e.created_at)).filter(Number.isFinite);
  return times.length > 0 ? Math.min(...times) : 0;
}

export class DeadLetters extends WebhookItems {
  /**
   * Keeps a delivery past its last attempt as a dead letter; false when it already was
   * one. Its key is the delivery's (the time its oldest event was accepted, then its
   * id), not the time of the write, so that a step run again after a crash (SQS
   * delivers it again) finds the dead letter it wrote instead of writing a second. A
   * delivery a dead-letter replay sent again replaces the letter it was sent from,
   * which that replay may not have removed yet (see `remove`), and is kept
   * with its replay's time (`replayed_at`), so that the replay does not remove it.
   */
  async add(message: DeliveryMessage, reason: string, now: number): Promise<boolean> {
    const replayedAt = message.replayedAt;
    return this.putOnce({
      TableName: this.table,
      Item: {
        pk: deadPk(message.webhookId),
        sk: `${pad(acceptedAt(message))}#${message.deliveryId}`,
        reason,
        message: JSON.stringify(message),
        ...(replayedAt !== undefined && { replayed_at: replayedAt }),
        ...this.expiry(now),
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
  async page(
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
    const pages = this.pages(
      {
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
      () => !more,
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
   * Holds the webhook's dead letters for one replay, until `releaseReplayHold` or for
   * REPLAY_HOLD_MS: its token, or undefined while another replay holds them. A letter
   * stays until the replay that read it has sent and removed it, so two replays at once
   * read and sent the same letters. (A hold whose answer was lost, refused on the SDK's
   * second try by its own first, is still this caller's.)
   */
  async holdForReplay(webhookId: string, now: number): Promise<string | undefined> {
    const token = randomUUID();
    const key = replayHoldKey(webhookId);
    const held = await appliedOwn(
      this.client.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key,
          UpdateExpression: 'SET #token = :token, #until = :until, #expires_at = :expires_at',
          ConditionExpression: 'attribute_not_exists(#until) OR #until < :now',
          ExpressionAttributeNames: names('token', 'until', 'expires_at'),
          // TTL removes a hold its replay did not release (one that died), a day on.
          ExpressionAttributeValues: {
            ':token': token,
            ':until': now + REPLAY_HOLD_MS,
            ':now': now,
            ':expires_at': epochSeconds(now + REPLAY_HOLD_MS + 86_400_000),
          },
        }),
      ),
      { client: this.client, table: this.table, key, attribute: 'token', token },
    );
    return held ? token : undefined;
  }

  /** Ends the hold `token` names (not another replay's, should this one have outlived its hold). */
  async releaseReplayHold(webhookId: string, token: string): Promise<void> {
    await applied(
      this.client.send(
        new DeleteCommand({
          TableName: this.table,
          Key: replayHoldKey(webhookId),
          ConditionExpression: '#token = :token',
          ExpressionAttributeNames: names('token'),
          ExpressionAttributeValues: { ':token': token },
        }),
      ),
    );
  }

  /**
   * Removes a dead letter (keyed `sk`, as `page` gives it) once it was sent
   * again: only the one read (`replayedAt` as the page gave it), not one its delivery,
   * sent again and failed again meanwhile, wrote in its place.
   */
  async remove(webhookId: string, sk: string, replayedAt: number | undefined): Promise<void> {
    await applied(
      this.client.send(
        new DeleteCommand({
          TableName: this.table,
          Key: { pk: deadPk(webhookId), sk },
          ConditionExpression: replayedAt === undefined ? 'attribute_not_exists(#replayed_at)' : '#replayed_at = :replayed_at',
          ExpressionAttributeNames: names('replayed_at'),
          ...(replayedAt !== undefined && { ExpressionAttributeValues: { ':replayed_at': replayedAt } }),
        }),
      ),
    );
  }
}
