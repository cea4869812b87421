"""The two agents of Tandem as plain objects (`device.agent.DeviceAgent`, `cloud.agent.CloudAgent`), their
language models (`llm`), and the helpers that run both without the graph for training and calibration
(`pipeline`)."""
