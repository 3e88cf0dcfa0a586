/**
 * The delivery Lambda handler, as a factory shared by the Lambda entry and the
 * sandbox. Records are processed in parallel; each failed one is reported alone
 * (partial batch response), never the whole batch.
 */
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import type { SQSRecord } from 'aws-lambda';
import { parseDeliveryMessage } from '../adapters/delivery-queue.ts';
import { type DeliveryDeps, deliver } from '../app/delivery.ts';
import type { SqsHandler } from '../distributor/process.ts';

export function makeDeliveryHandler(deps: DeliveryDeps): SqsHandler {
  return async (event, context) => {
    const processor = new BatchProcessor(EventType.SQS);
    return processPartialResponse(
      event,
      async (record: SQSRecord) => {
        await deliver(deps, parseDeliveryMessage(record.body));
      },
      processor,
      { context },
    );
  };
}
