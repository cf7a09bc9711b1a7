import csv

with open("data/raw.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["x", "y"])
    for i in range(50):
        w.writerow([i, (i * 37) % 11])
