"""Model serving: deployments, routing, micro-batching, the prediction log and the HTTP app.

A :class:`~loopwright.serving.deployment.DeploymentSpec` (usually YAML) names a registered model
and its routes: the champion, an optional canary taking a share of the traffic, and optional
shadows that see every request and answer none. :class:`~loopwright.serving.routing.Router`
picks a route per request (sticky when the caller sends a key);
:class:`~loopwright.serving.predictor.ModelSlot` holds one loaded version and answers through a
:class:`~loopwright.serving.batching.MicroBatcher`, which joins concurrent requests into one
model call. The HTTP app speaks the Open Inference Protocol (V2) and writes every request and
answer to the prediction log.
"""
