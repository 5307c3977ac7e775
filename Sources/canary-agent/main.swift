print("canary-agent")
