/**
 * The CDK app: `npx cdk deploy` deploys the stack `Sluice`. Config overrides come
 * from the context key `sluice`: in cdk.json (`"sluice": {"objectQueueCap": 5000}`)
 * or on the command line (`-c 'sluice={"objectQueueCap":5000}'`, which arrives as a string).
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { overridesFromContext } from '../lib/context.ts';
import { SluiceStack } from '../lib/sluice-stack.ts';

const app = new App();
new SluiceStack(app, 'Sluice', {
  description: 'sluice: flood-proof webhooks and event streams',
  config: overridesFromContext(app),
});
// cdk-nag 3 is a validation plugin: synth fails on any finding not acknowledged with a reason.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
