"""The witness (issue 17): remembers what each operator's log looked like and cosigns it.

An operator could show one chain to the lead's Elasticsearch and another to an auditor; its own
checkpoints cannot tell, since it signs both. A witness polls each registered operator's latest
checkpoint, checks it is consistent with the last one it saw (RFC 9162 §2.1.4), cosigns it
(c2sp.org/tlog-cosignature) and keeps it. Two parties holding checkpoints cosigned by the same
witness therefore hold views of one and the same log, or the witness raised
`inconsistent_checkpoint`.
"""
