/**
 * One attempt: a delivery signed and POSTed to its endpoint, logged, and what the
 * answer tells of the endpoint besides success or failure: how slowly it answers
 * (its pace follows), and whether it asked to be left alone (Retry-After).
 */
import type { SendResult } from '../../adapters/webhook-sender.ts';
import { askedWaitSeconds } from '../../core/backoff.ts';
import { deliveryBody } from '../../core/deliveries.ts';
import { slowAfterAnswer, slowAnswerChanged, unansweredNoteAfter } from '../../core/endpoint-pace.ts';
import { newId } from '../../core/ids.ts';
import { type DeliveryMessage, liveSecrets, SLUICE_VERSION, type Webhook } from '../../core/model.ts';
import { decideAttempt } from '../../core/outcome.ts';
import { deliveryHeaders } from '../../core/signing.ts';
import { LogTally } from '../../core/telemetry.ts';
import { releaseGivenBack } from './chains.ts';
import type { DeliveryDeps } from './deps.ts';

/**
 * Signs, sends and logs one attempt. A delivery's first attempt is logged with
 * the delivery itself (its events, for replay), in one write; a replay's is not.
 */
export async function attempt(
  deps: DeliveryDeps,
  webhook: Webhook,
  message: DeliveryMessage,
  options: { probe?: boolean } = {},
): Promise<SendResult> {
  const now = deps.now();
  const body = deliveryBody(webhook.id, message.events);
  const headers = deliveryHeaders(liveSecrets(webhook, now), message.deliveryId, Math.floor(now / 1000), body, SLUICE_VERSION);
  const watch = watchUnanswered(deps, webhook);
  let result: SendResult;
  try {
    result = await deps.send({ url: webhook.url, headers: { ...headers }, body, timeoutMs: deps.config.deliveryTimeoutMs });
  } finally {
    watch.stop();
  }
  // A wait in seconds (Retry-After) counts from the answer that asks for it, not from
  // when the POST began: an endpoint that took 8 s to answer "wait 5 s" gets its 5 s.
  const answeredAt = deps.now();
  const noted = await watch.noted();
  const record = {
    id: newId('att', now),
    delivery_id: message.deliveryId,
    attempt: message.attempt,
    status_code: result.statusCode ?? null,
    duration_ms: result.durationMs,
    error:
      result.error ??
      (result.statusCode !== undefined && (result.statusCode < 200 || result.statusCode > 299) ? `HTTP ${result.statusCode}` : null),
    at: new Date(now).toISOString(),
  };
  // A replay's delivery: its events are in the log at their first delivery already.
  const logged =
    message.attempt === 1 && !options.probe && !message.replay
      ? deps.deliveryLog.add(message, now, record)
      : deps.deliveryLog.recordAttempt(webhook.id, record, now);
  await keptOrCounted(deps, webhook, logged);
  deps.metrics.count('DeliveryAttempts', 1, { result: decideAttempt(result.statusCode) });
  // A slow endpoint's pace follows its answer time (core/endpoint-pace.ts), and the wait
  // this POST was noted for while it went unanswered is kept already.
  const kept = noted === undefined ? webhook.slowMs : Math.max(noted, webhook.slowMs ?? 0);
  const slow = slowAfterAnswer(kept, result.durationMs, decideAttempt(result.statusCode) === 'delivered');
  if (slow !== undefined && slowAnswerChanged(kept, slow)) {
    await deps.webhooks.noteSlowAnswers(webhook.tenantId, webhook.id, webhook.url, slow);
    if (kept === undefined) logSlow(deps, webhook, { answerMs: slow });
  } else if (slow === undefined && kept !== undefined) {
    // Slow no more: its whole rate back, for the deliveries of its backlog too, which took
    // shares at the slow pace (each takes one again at its next look, see `deliver`). Only
    // by the answer that forgot the slowness: another quick answer to a POST sent while it
    // was slow would give back the time deliveries took at the whole rate since, and an
    // old URL's, the new URL's time.
    if (await deps.webhooks.forgetSlowAnswers(webhook.tenantId, webhook.id, webhook.url, kept)) {
      await deps.paces.giveBack(webhook.id);
      await releaseGivenBack(deps, webhook);
    }
  }
  const askedSeconds = askedWaitSeconds(result.statusCode, result.retryAfter, answeredAt);
  if (askedSeconds !== undefined) {
    await deps.webhooks.leaveAloneUntil(webhook.tenantId, webhook.id, answeredAt + askedSeconds * 1000, webhook.url);
  }
  return result;
}

/**
 * When this container last logged each webhook's attempts left out of its log, and how
 * many since: once a minute, so a throttled partition is not also a flood of log lines.
 */
const unloggedLog = new LogTally(60_000);

/**
 * Waits for the write that logs an attempt, made after its POST: one that fails is
 * counted (`AttemptLogsFailed`) and logged, not thrown. The endpoint has the delivery
 * whatever the write does, and a failed record would have SQS hand it back after the
 * visibility timeout to be POSTed again, up to maxReceiveCount times, then moved to the
 * dead-letter queue: a delivered delivery paging on-call. The log of a webhook's
 * deliveries is one partition (`deliveries#<webhook>`), written in time order, which
 * DynamoDB serves at most 1,000 write units a second however it splits: at the
 * endpoint's rate (50 POSTs a second) a delivery's compressed events over about 20 KB
 * pass it, and the throttled writes would otherwise turn every throttled second of
 * deliveries into duplicates, each holding its message in flight for 3 minutes.
 * What is left out is the attempt's line in `GET …/attempts` and, for a first attempt,
 * the delivery in a later replay.
 */
async function keptOrCounted(deps: DeliveryDeps, webhook: Webhook, write: Promise<void>): Promise<void> {
  try {
    await write;
  } catch (error) {
    deps.metrics.count('AttemptLogsFailed');
    const due = unloggedLog.note(webhook.id, deps.now(), { attempts: 1 });
    if (due) {
      deps.logger.error(
        "An attempt was made but not logged (DynamoDB refused the log's write): it is missing from the attempts and replay",
        {
          tenant: webhook.tenantId,
          webhook: webhook.id,
          ...due,
          error,
        },
      );
    }
  }
}

function logSlow(deps: DeliveryDeps, webhook: Webhook, how: { answerMs: number | undefined } | { unansweredMs: number }): void {
  deps.logger.warn('Endpoint answers slowly: its deliveries now go at a pace set by its answer time', {
    tenant: webhook.tenantId,
    webhook: webhook.id,
    ...how,
  });
}

/**
 * Watches a POST under way for an endpoint that has started to hang: unanswered after
 * `unansweredNoteAfter`, and again after each doubling of that wait, the endpoint is
 * noted as at least that slow, so that the deliveries after it take the slow pace at
 * once rather than once this one times out. `noted` answers the longest wait it noted
 * (undefined: none), after any write still under way; a write that fails is logged, and
 * the answer notes the time again.
 */
function watchUnanswered(deps: DeliveryDeps, webhook: Webhook): { stop(): void; noted(): Promise<number | undefined> } {
  let noted: number | undefined;
  let writing: Promise<void> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const noteAt = (waitMs: number, sinceMs: number) => {
    timer = setTimeout(() => {
      writing = writing.then(async () => {
        try {
          if (!(await deps.webhooks.noteUnanswered(webhook.tenantId, webhook.id, webhook.url, waitMs))) return;
          noted = waitMs;
          if (webhook.slowMs === undefined && waitMs === unansweredNoteAfter(undefined)) logSlow(deps, webhook, { unansweredMs: waitMs });
        } catch (error) {
          deps.logger.warn('Could not note an endpoint slow while its POST went unanswered', {
            tenant: webhook.tenantId,
            webhook: webhook.id,
            error: String(error),
          });
        }
      });
      noteAt(2 * waitMs, waitMs);
    }, waitMs - sinceMs);
  };
  noteAt(unansweredNoteAfter(webhook.slowMs), 0);
  return {
    stop: () => clearTimeout(timer),
    noted: async () => {
      await writing;
      return noted;
    },
  };
}
