"""What a person looks at: the figures, the GIFs and the report page (its Jinja2 template in
templates/).
"""
