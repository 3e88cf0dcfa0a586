/**
 * The distributor's Lambda handler, as a factory: the Lambda entry (handler.ts)
 * and the sandbox's poller build it from the same code. One turn per doorbell;
 * partial batch responses with the FIFO processor, so a failed doorbell holds back
 * only its own object's group.
 */
import { processPartialResponse, SqsFifoPartialProcessorAsync } from '@aws-lambda-powertools/batch';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { parseDoorbell } from '../adapters/doorbell.ts';
import type { Distributor } from '../app/distributor.ts';
import { newLeaseOwner } from '../app/runtime.ts';
import type { LoggerPort } from '../core/telemetry.ts';

export type SqsHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse>;

export function makeDistributorHandler(distributor: Distributor, logger: LoggerPort): SqsHandler {
  return async (event, context) => {
    const owner = newLeaseOwner();
    const processor = new SqsFifoPartialProcessorAsync();
    return processPartialResponse(
      event,
      async (record: SQSRecord) => {
        const key = parseDoorbell(record.body);
        const result = await distributor.runTurn(key, owner);
        if (result.outcome !== 'idle') {
          logger.info('Turn ended', { tenant: key.tenantId, resource: key.resource, ...result });
        }
      },
      processor,
      { context, skipGroupOnError: true },
    );
  };
}
