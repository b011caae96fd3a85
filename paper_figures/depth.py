def draw(frame, out_dir, name='depth'): return []
