def draw(frame, out_dir, name='misalignment'): return []
