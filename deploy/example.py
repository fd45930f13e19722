"""The spec's basic example, run through persistd (deploy/setup.sh runs it)."""
import numpy as np

from persistd import dump, load

# Simple object persistence
data = {'array': np.random.random(1000), 'metadata': {'version': 1}}
dump(data, 'data.pkl')
loaded_data = load('data.pkl')

# With compression
large_array = np.random.random((10000, 1000))
dump(large_array, 'large_data.pkl', compress=3)  # zlib level 3
loaded_array = load('large_data.pkl')

assert np.array_equal(loaded_data['array'], data['array'])
assert loaded_data['metadata'] == {'version': 1}
assert np.array_equal(loaded_array, large_array)
print("loaded_data:", {'array': loaded_data['array'][:5], 'metadata': loaded_data['metadata']})
print("loaded_array:", loaded_array.shape, loaded_array.dtype, "equal:", True)
