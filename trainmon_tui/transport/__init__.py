"""Getting lines from hosts: SSH sessions, remote streams, local subprocesses and NVML.

Never imports textual.
"""
