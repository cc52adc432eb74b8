"""Whether a run reproduces: the gate, the spread study's arithmetic, the reference's numbers
and their binding to models, the experiments table, and scratch copies of the project.
tools/ holds their command lines.
"""
