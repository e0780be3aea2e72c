"""numba.get_num_threads() for jitted code, through the threading layer's registered symbol.

numba's own jitted get_num_threads calls the threading layer through a ctypes function pointer,
an address valid in one process only, so numba refuses to cache any function that calls it
("uses dynamic globals"): pynndescent's NN-descent (nn_descent, nn_descent_internal, its tree
initialisation) does, and compiled again in every process. numba's get_thread_id already calls
the same library by symbol name (``_iget_num_threads``/``_iget_thread_id`` intrinsics), which
numba resolves when it loads cached code; jitcache points get_num_threads at this function. Same
C function, same value, same type (int32, as the ctypes pointer returns).
"""

import numba
import numpy as np
from numba.np.ufunc.parallel import _iget_num_threads


@numba.njit(cache=True)
def get_num_threads():
    return np.int32(_iget_num_threads())
