def draw(frame, out_dir, name='schedule'): return []
