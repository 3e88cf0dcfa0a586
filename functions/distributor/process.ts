/**
 * The distributor's Lambda handler, as a factory: the Lambda entry (handler.ts)
 * and the sandbox's poller build it from the same code. One turn per doorbell.
 *
 * A batch from a FIFO queue can hold several message groups (objects). Each group
 * goes through Powertools' FIFO processor on its own, and the groups run in
 * parallel: a long turn for a hot object never holds up the other objects in the
 * same batch, while within a group order is kept and a failure skips the rest of
 * that group only (partial batch response).
 *
 * SQS hands over as many of a group's messages at once as it can: an object may have
 * several doorbells in one batch (a turn's ring, and the reconciler's copies of one that
 * waited in a backlog). Once a turn of the object rings it again, that doorbell waits
 * behind the batch's, so the group's later doorbells are acknowledged without a turn:
 * each ran a whole turn before, one after the other, and a few of them at a long
 * turnMaxMs outlasted the function's timeout, which gives the whole batch back.
 */
import { processPartialResponse, SqsFifoPartialProcessorAsync } from '@aws-lambda-powertools/batch';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { parseDoorbell } from '../adapters/doorbell.ts';
import type { Distributor } from '../app/distributor.ts';
import { newLeaseOwner } from '../app/runtime.ts';
import { type LoggerPort, type MetricsPort, NO_METRICS } from '../core/telemetry.ts';
import { RECORD_FAILURE_METRICS } from '../definitions/alarms.ts';
import { afterFailedReceive, DISTRIBUTE_QUEUE } from '../definitions/queues.ts';

export type SqsHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse>;

/** Splits records by message group, keeping their order within each group. */
export function byMessageGroup(records: readonly SQSRecord[]): SQSRecord[][] {
  const groups = new Map<string, SQSRecord[]>();
  for (const record of records) {
    const group = record.attributes.MessageGroupId ?? record.messageId;
    const list = groups.get(group) ?? [];
    list.push(record);
    groups.set(group, list);
  }
  return [...groups.values()];
}

/** The tenant and resource a doorbell names, for a log line; nothing when its body cannot be read. */
function objectOf(record: SQSRecord): { tenant?: string; resource?: string } {
  try {
    const { tenantId, resource } = parseDoorbell(record.body);
    return { tenant: tenantId, resource };
  } catch {
    return {};
  }
}

export function makeDistributorHandler(distributor: Distributor, logger: LoggerPort, metrics: MetricsPort = NO_METRICS): SqsHandler {
  return async (event, context) => {
    const owner = newLeaseOwner();
    // The turns of this batch share one outbox, which merges their deliveries per webhook.
    const outbox = distributor.newOutbox();
    const groups = byMessageGroup(event.Records);
    // Lambda deletes a batch's messages when the invocation returns, so one object's
    // long turn would hold the other objects' FIFO groups: with company, turns are short.
    const shared = groups.length > 1;
    /** Runs a doorbell's turn; answers whether it rang the object again. */
    const recordHandler = async (record: SQSRecord): Promise<boolean> => {
      try {
        return await turn(record);
      } catch (error) {
        // Reported to SQS alone, the record fails no invocation: Lambda's Errors would
        // never see it. Counted for the distributor-errors alarm, and logged for on-call,
        // with its object when the body names one (the group id is a hash: it names nobody).
        metrics.count(RECORD_FAILURE_METRICS.distributor);
        const receiveCount = Number(record.attributes?.ApproximateReceiveCount ?? 1);
        // Both lanes' queues dead-letter at the same count (DISTRIBUTE_BULK_QUEUE is the main one's copy).
        const last = afterFailedReceive(DISTRIBUTE_QUEUE, receiveCount) === 'dead_letter_queue';
        logger.error(
          last
            ? 'A doorbell record failed at its last receive; SQS moves it to the dead-letter queue, and its object waits for the reconciler'
            : 'A doorbell record failed; SQS brings it back after its visibility timeout',
          {
            ...objectOf(record),
            messageId: record.messageId,
            group: record.attributes?.MessageGroupId,
            receiveCount,
            ...(last && { deadLettered: true }),
            error,
          },
        );
        throw error;
      }
    };
    const turn = async (record: SQSRecord) => {
      const { fresh, quiet, snapshot, lane, ...key } = parseDoorbell(record.body);
      // A doorbell received again (its invocation failed or timed out, perhaps after its
      // quiet turn committed) does not trust its snapshot: the turn reads the meta item,
      // so a committed event is not published twice. (The turn itself trusts one only
      // for a few seconds after its event was reserved: see SNAPSHOT_TRUST_MS.)
      const trusted = snapshot && record.attributes?.ApproximateReceiveCount === '1' ? { snapshot } : {};
      outbox.join(key.tenantId);
      const result = await distributor
        .runTurn(key, owner, { freshSwitches: fresh, quiet, ...trusted, outbox, shared, lane })
        .finally(() => outbox.leave(key.tenantId));
      if (result.outcome !== 'idle') {
        logger.info('Turn ended', { tenant: key.tenantId, resource: key.resource, ...result });
      }
      return result.outcome === 'rerung';
    };
    const responses = await Promise.all(
      groups.map((records) => {
        // Set once a turn rang the object again: its later doorbells here need no turn.
        // Not after any other end: an idle object's next doorbell may be its only one.
        let rungBehind = false;
        const groupHandler = async (record: SQSRecord) => {
          if (!rungBehind) rungBehind = await recordHandler(record);
        };
        return processPartialResponse({ Records: records }, groupHandler, new SqsFifoPartialProcessorAsync(), {
          context,
          skipGroupOnError: true,
          throwOnFullBatchFailure: false,
        });
      }),
    );
    // Cached lookups that the turns used near the end of their age are being made again
    // behind them; Lambda would freeze those calls halfway once this returns.
    await distributor.lookupsRefreshed();
    return { batchItemFailures: responses.flatMap((r) => r.batchItemFailures) };
  };
}
