/* ort_driver: run one ONNX model with ONNX Runtime's C library a given number of times (the lab's ORT side).
 *
 *   ort_driver MODEL.onnx RUNS INPUT_NAME INPUT.bin OUTPUT_NAME OUTPUT.bin OUTPUT_COUNT DIM0 [DIM1 ...]
 *
 * INPUT.bin holds the float32 input (shape DIM0 x DIM1 x ...); OUTPUT.bin receives the first OUTPUT_COUNT
 * float32 values of the output after the last run. One intra-op and one inter-op thread, full graph
 * optimization: the single-threaded configuration the lab compares against (the counter needs one thread).
 *
 * ORT's C API is a table of function pointers (struct OrtApi) that only ever grows at its end, so a
 * function's position in it is its ABI. We name the handful of positions we call rather than include
 * onnxruntime_c_api.h, which the Python wheel does not ship.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void *Status; /* OrtStatus*, NULL on success */
typedef Status (*Fn)();

struct OrtApiBase {
    const void *const *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
};
extern const struct OrtApiBase *OrtGetApiBase(void);

/* Positions in struct OrtApi (onnxruntime_c_api.h, stable since API version 1). */
enum {
    GET_ERROR_MESSAGE = 2,
    CREATE_ENV = 3,
    CREATE_SESSION = 7,
    RUN = 9,
    CREATE_SESSION_OPTIONS = 10,
    SET_GRAPH_OPTIMIZATION_LEVEL = 23,
    SET_INTRA_OP_NUM_THREADS = 24,
    SET_INTER_OP_NUM_THREADS = 25,
    CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE = 49,
    GET_TENSOR_MUTABLE_DATA = 51,
    CREATE_CPU_MEMORY_INFO = 69,
};
#define API_VERSION 13 /* ORT 1.13; every later library serves it */
#define ENABLE_ALL 99
#define ELEMENT_FLOAT 1
#define ARENA_ALLOCATOR 1
#define MEM_TYPE_DEFAULT 0

static const void *const *api;

static void check(Status status, const char *what) {
    if (status != NULL) {
        const char *(*message)(Status) = (const char *(*)(Status))api[GET_ERROR_MESSAGE];
        fprintf(stderr, "ort_driver: %s failed: %s\n", what, message(status));
        exit(1);
    }
}

static void *read_file(const char *path, size_t expected) {
    FILE *f = fopen(path, "rb");
    void *data = malloc(expected ? expected : 1);
    if (f == NULL || data == NULL || fread(data, 1, expected, f) != expected) {
        fprintf(stderr, "ort_driver: cannot read %zu bytes from %s\n", expected, path);
        exit(1);
    }
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: ort_driver MODEL RUNS INPUT_NAME INPUT.bin OUTPUT_NAME OUTPUT.bin OUTPUT_COUNT DIMS...\n");
        return 2;
    }
    api = OrtGetApiBase()->GetApi(API_VERSION);
    if (api == NULL) {
        fprintf(stderr, "ort_driver: the library does not serve API version %d\n", API_VERSION);
        return 1;
    }
    int runs = atoi(argv[2]);
    size_t out_count = (size_t)atoll(argv[7]);
    size_t ndim = (size_t)(argc - 8), elements = 1;
    int64_t shape[8];
    if (ndim > 8) return 2;
    for (size_t i = 0; i < ndim; i++) elements *= (size_t)(shape[i] = atoll(argv[8 + i]));
    float *input = read_file(argv[4], elements * sizeof(float));

    void *env, *options, *session, *memory, *value;
    check(((Fn)api[CREATE_ENV])(3 /* errors only */, "perf_lab", &env), "CreateEnv");
    check(((Fn)api[CREATE_SESSION_OPTIONS])(&options), "CreateSessionOptions");
    check(((Fn)api[SET_INTRA_OP_NUM_THREADS])(options, 1), "SetIntraOpNumThreads");
    check(((Fn)api[SET_INTER_OP_NUM_THREADS])(options, 1), "SetInterOpNumThreads");
    check(((Fn)api[SET_GRAPH_OPTIMIZATION_LEVEL])(options, ENABLE_ALL), "SetSessionGraphOptimizationLevel");
    check(((Fn)api[CREATE_SESSION])(env, argv[1], options, &session), "CreateSession");
    check(((Fn)api[CREATE_CPU_MEMORY_INFO])(ARENA_ALLOCATOR, MEM_TYPE_DEFAULT, &memory), "CreateCpuMemoryInfo");
    check(((Fn)api[CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE])(memory, input, elements * sizeof(float), shape, ndim,
                                                          ELEMENT_FLOAT, &value),
          "CreateTensorWithDataAsOrtValue");
    const char *input_names[1] = {argv[3]}, *output_names[1] = {argv[5]};
    void *output = NULL;
    for (int r = 0; r < runs; r++) {
        output = NULL; /* a fresh output each run, as a serving loop would get; never released (exits soon) */
        check(((Fn)api[RUN])(session, NULL, input_names, (const void *const *)&value, (size_t)1, output_names,
                             (size_t)1, &output),
              "Run");
    }
    float *result;
    check(((Fn)api[GET_TENSOR_MUTABLE_DATA])(output, (void **)&result), "GetTensorMutableData");
    FILE *f = fopen(argv[6], "wb");
    if (f == NULL || fwrite(result, sizeof(float), out_count, f) != out_count) {
        fprintf(stderr, "ort_driver: cannot write %s\n", argv[6]);
        return 1;
    }
    fclose(f);
    printf("ok %s\n", OrtGetApiBase()->GetVersionString());
    return 0;
}
