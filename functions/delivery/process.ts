/**
 * The delivery Lambda handler, as a factory shared by the Lambda entry and the
 * sandbox. Records are processed in parallel; each failed one is reported alone
 * (partial batch response), never the whole batch. A failed attempt is not a
 * failed record: it is rescheduled through an SQS delay. Only an unexpected error
 * (e.g. DynamoDB unavailable) fails a record, and SQS delivers it again.
 */
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import type { SQSRecord } from 'aws-lambda';
import { parseDeliverQueueMessage } from '../adapters/delivery-queue.ts';
import { type DeliveryDeps, handleDeliverMessage } from '../app/delivery.ts';
import type { SqsHandler } from '../distributor/process.ts';

export function makeDeliveryHandler(deps: DeliveryDeps): SqsHandler {
  return async (event, context) => {
    const processor = new BatchProcessor(EventType.SQS);
    return processPartialResponse(
      event,
      async (record: SQSRecord) => {
        await handleDeliverMessage(deps, parseDeliverQueueMessage(record.body));
      },
      processor,
      { context, throwOnFullBatchFailure: false },
    );
  };
}
