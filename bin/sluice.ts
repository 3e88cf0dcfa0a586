/**
 * The CDK app: `npx cdk deploy` deploys the stack `Sluice`. Config overrides come
 * from the context key `sluice`: in cdk.json (`"sluice": {"objectQueueCap": 5000}`)
 * or on the command line (`-c 'sluice={"objectQueueCap":5000}'`, which arrives as a string);
 * the tables' removal policy and API Gateway's CloudWatch role from `sluice:tableRemovalPolicy`
 * and `sluice:apiGatewayCloudWatchRole` (lib/context.ts `deployChoicesFromContext`).
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { stackFromContext } from '../lib/sluice-stack.ts';

const app = new App();
stackFromContext(app, 'Sluice', { description: 'sluice: flood-proof webhooks and event streams' });
// cdk-nag 3 is a validation plugin: synth fails on any finding not acknowledged with a reason.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
