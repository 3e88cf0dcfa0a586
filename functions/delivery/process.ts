/**
 * The delivery Lambda handler, as a factory shared by the Lambda entry and the
 * sandbox. Records are processed in parallel; each failed one is reported alone
 * (partial batch response), never the whole batch. A failed attempt is not a
 * failed record: it is rescheduled through an SQS delay. Only an unexpected error
 * (e.g. DynamoDB unavailable) fails a record, and SQS delivers it again.
 */
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import type { SQSRecord } from 'aws-lambda';
import { readDeliverQueueBody } from '../adapters/delivery-queue.ts';
import type { DeliveryDeps } from '../app/delivery/deps.ts';
import { handleDeliverMessage } from '../app/delivery.ts';
import { RECORD_FAILURE_METRICS } from '../definitions/alarms.ts';
import { afterFailedReceive, DELIVER_QUEUE } from '../definitions/queues.ts';
import type { SqsHandler } from '../distributor/process.ts';

/** The metric of how late a batch's latest message was received after it was due (delivery-backlog-age). */
export const DELIVERY_QUEUE_LAG = 'DeliveryQueueLag';

export function makeDeliveryHandler(deps: DeliveryDeps): SqsHandler {
  return async (event, context) => {
    const processor = new BatchProcessor(EventType.SQS);
    const received = deps.now();
    let lagMs: number | undefined;
    const result = await processPartialResponse(
      event,
      async (record: SQSRecord) => {
        let about: Record<string, unknown> = {};
        try {
          const { message, dueAt } = readDeliverQueueBody(record.body);
          about = { kind: message.kind ?? 'delivery', tenant: message.tenantId, webhook: message.webhookId };
          // A message received again came back after its visibility timeout, because an
          // earlier receive failed (its record counted and logged, below): that wait is no
          // backlog, and counted from its due time it would grow by 3 minutes a receive.
          // A message redriven from the dead-letter queue is a new message to SQS (a new
          // id, its receive count and send time anew) with its old due time: it is late
          // from the redrive, not from when it was first due (a redrive paged otherwise).
          if (dueAt !== undefined && firstReceive(record)) lagMs = Math.max(lagMs ?? 0, received - Math.max(dueAt, sentAt(record)));
          await handleDeliverMessage(deps, message);
        } catch (error) {
          // Reported to SQS alone, the record fails no invocation: Lambda's Errors would
          // never see it. Counted for the delivery-errors alarm, and logged for on-call.
          deps.metrics.count(RECORD_FAILURE_METRICS.delivery);
          const receiveCount = Number(record.attributes?.ApproximateReceiveCount ?? 1);
          const last = afterFailedReceive(DELIVER_QUEUE, receiveCount) === 'dead_letter_queue';
          deps.logger.error(
            last
              ? 'A deliver-queue record failed at its last receive; SQS moves it to the dead-letter queue, where it waits for a redrive'
              : 'A deliver-queue record failed; SQS brings it back after its visibility timeout',
            { ...about, messageId: record.messageId, receiveCount, ...(last && { deadLettered: true }), error },
          );
          throw error;
        }
      },
      processor,
      { context, throwOnFullBatchFailure: false },
    );
    // Not SQS's ApproximateAgeOfOldestMessage, which counts from the send: retries wait
    // out delays of up to 15 minutes in the deliver queue on purpose.
    if (lagMs !== undefined) deps.metrics.seconds?.(DELIVERY_QUEUE_LAG, Math.max(0, lagMs) / 1000);
    return result;
  };
}

/** When SQS took the message in (0 if it does not say). */
function sentAt(record: SQSRecord): number {
  const sent = Number(record.attributes?.SentTimestamp);
  return Number.isFinite(sent) ? sent : 0;
}

function firstReceive(record: SQSRecord): boolean {
  return Number(record.attributes?.ApproximateReceiveCount ?? 1) <= 1;
}
