"""What cortex-hook keeps on disk besides the state database, and the rules for trusting it:
atomic writes, who may have changed a file, the runtime dir's layout, each unit's decision
record and env file, and the memos that spare later commands work."""
